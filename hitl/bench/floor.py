"""The floor: Temporal's own price for the steps a hitl decision must take.

The bare workflows of ``hitl.bench.baseline`` are the issue's anchor, the least
a durable workflow can do. A hitl decision must do more than that on Temporal
itself, whatever its code: start with the search attributes, memo and summary
operators filter on; record the rules layer's result in history (a local
activity); publish its zone and status (search-attribute upserts); run the
executor (an activity); write the decision record (a local activity). These
workflows take exactly those steps with empty payloads and no store, so in one
benchmark run hitl / floor is the cost of hitl's own code and store writes and
floor / bare is what Temporal charges for the steps themselves.

Its own module, so the sandbox re-imports only this for a floor workflow and
the bare baseline stays the size it was.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import SearchAttributeKey

FLOOR_TIMEOUT = timedelta(seconds=30)
# The same names as hitl's, so the server indexes the same attributes.
STATUS = SearchAttributeKey.for_keyword("HitlStatus")
ZONE = SearchAttributeKey.for_keyword("HitlZone")
RISK = SearchAttributeKey.for_keyword("HitlRisk")
PRIORITY = SearchAttributeKey.for_int("HitlPriority")


@activity.defn(name="floor_step")
async def floor_step(name: str) -> str:
    """Stands in for each hitl activity: one step with nothing in it."""
    return name


async def _local(name: str) -> None:
    await workflow.execute_local_activity(floor_step, name,
                                          start_to_close_timeout=FLOOR_TIMEOUT)


async def _act(name: str) -> None:
    await workflow.execute_activity(floor_step, name, start_to_close_timeout=FLOOR_TIMEOUT)


@workflow.defn(name="FloorWorkflow")
class FloorWorkflow:
    """The autonomous path's steps: rules (local), publish, execute, publish, record
    (local)."""

    @workflow.run
    async def run(self, name: str) -> str:
        await _local(name)
        workflow.upsert_search_attributes([
            STATUS.value_set("executing"), PRIORITY.value_set(3), ZONE.value_set("auto"),
            RISK.value_set("low")])
        await _act(name)
        workflow.upsert_search_attributes([STATUS.value_set("executed")])
        await _local(name)
        return name


@workflow.defn(name="FloorSignalWorkflow")
class FloorSignalWorkflow:
    """The gate's steps after an approval: authorize the reviewer (local), execute
    (one activity, which also writes the approval), publish, record (local)."""

    def __init__(self) -> None:
        self._approved_by: str | None = None

    @workflow.run
    async def run(self, name: str) -> str:
        await _local(name)
        workflow.upsert_search_attributes([
            STATUS.value_set("pending_review"), PRIORITY.value_set(1), ZONE.value_set("escalate"),
            RISK.value_set("high")])
        await _act(name)  # the review queue row
        await workflow.wait_condition(lambda: self._approved_by is not None)
        await _local(name)
        await _act(name)
        workflow.upsert_search_attributes([STATUS.value_set("executed")])
        await _local(name)
        return name

    @workflow.signal(name="approve")
    def approve(self, reviewer: str) -> None:
        self._approved_by = reviewer
