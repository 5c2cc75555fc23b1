"""The baseline: what the same load costs on bare Temporal, with no hitl in it.

``BareWorkflow`` runs one trivial activity and returns, the floor under the
autonomous path (hitl adds the rules local activity, search-attribute upserts,
the ledger executor and the decision record). ``BareSignalWorkflow`` waits for
one signal and then runs the same activity, the floor under the gate path.
Their worker uses the SDK's default sandbox, as a bare Temporal app would;
both workflows live in this one small module because they are only ever
registered together, by the benchmark.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

BARE_TIMEOUT = timedelta(seconds=30)


@activity.defn(name="bare_touch")
async def bare_touch(name: str) -> str:
    """The trivial activity: one round trip through the activity task queue."""
    return name


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        result: str = await workflow.execute_activity(
            bare_touch, name, start_to_close_timeout=BARE_TIMEOUT)
        return result


@workflow.defn(name="BareSignalWorkflow")
class BareSignalWorkflow:
    def __init__(self) -> None:
        self._approved_by: str | None = None

    @workflow.run
    async def run(self, name: str) -> str:
        await workflow.wait_condition(lambda: self._approved_by is not None)
        result: str = await workflow.execute_activity(
            bare_touch, name, start_to_close_timeout=BARE_TIMEOUT)
        return result

    @workflow.signal(name="approve")
    def approve(self, reviewer: str) -> None:
        self._approved_by = reviewer
