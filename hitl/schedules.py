"""The Temporal Schedule that runs the feedback loop (``RecalibrationWorkflow``).

One schedule, ``hitl-recalibration``, weekly by default (Mondays 03:00 UTC, off
peak). Runs never overlap (SKIP: a run whose apply gate still waits for an
operator holds the next one back instead of proposing on top of it), and a
run missed while the server was down is made up within a day, not replayed
for every week missed. ``ensure_schedule`` is idempotent: it creates the
schedule or brings an existing one to the wanted spec and action, keeping
whether an operator paused it; with ``update=False`` (worker start, ``hitl
up``) it only creates a missing one, so a configuration set with ``hitl
schedule ensure`` survives restarts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from hitl.durations import format_duration
from hitl.errors import InputError
from hitl.recalibration import RecalibrationConfig, RecalibrationInput

SCHEDULE_ID = "hitl-recalibration"
WORKFLOW_NAME = "RecalibrationWorkflow"
DEFAULT_CRON = "0 3 * * 1"  # Mondays 03:00 UTC
MIN_INTERVAL_SECONDS = 60.0


class RecalibrationSchedule(BaseModel):
    """When recalibration runs and with what; ``every`` (seconds) replaces the cron."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule_id: str = Field(default=SCHEDULE_ID, min_length=1, max_length=200)
    cron: str = Field(default=DEFAULT_CRON, min_length=1, max_length=200)
    every: float | None = Field(default=None, ge=MIN_INTERVAL_SECONDS, allow_inf_nan=False)
    catchup_window: float = Field(default=86400.0, ge=60.0, allow_inf_nan=False)
    recalibration: RecalibrationConfig = Field(default_factory=RecalibrationConfig)

    @model_validator(mode="after")
    def _five_fields(self) -> RecalibrationSchedule:
        if self.every is None and len(self.cron.split()) != 5:
            raise ValueError(f"cron: {self.cron!r} needs five fields (minute hour day month "
                             "weekday)")
        return self

    @property
    def cadence(self) -> str:
        return (f"every {format_duration(self.every)}" if self.every is not None
                else f"cron {self.cron} (UTC)")


class ScheduleRun(BaseModel):
    workflow_id: str
    started_at: datetime | None = None
    running: bool = False


class ScheduleStatus(BaseModel):
    schedule_id: str
    cadence: str
    paused: bool
    next_runs: list[datetime]
    runs: list[ScheduleRun]  # recent first, running ones included
    skipped_overlap: int


def build_schedule(config: RecalibrationSchedule, *, task_queue: str) -> Schedule:
    spec = (ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=config.every))])
            if config.every is not None else ScheduleSpec(cron_expressions=[config.cron]))
    return Schedule(
        action=ScheduleActionStartWorkflow(
            WORKFLOW_NAME, RecalibrationInput(config=config.recalibration),
            id=config.schedule_id, task_queue=task_queue,
            static_summary=f"recalibration ({config.cadence}): certify thresholds, propose",
            static_details=("Certifies thresholds from the reviews and audits of the last "
                            f"{config.recalibration.lookback_days:g} days and proposes a policy "
                            "version; changes outside the auto-apply bounds wait for an "
                            "operator in a `policy_change` decision.")),
        spec=spec,
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP,
                              catchup_window=timedelta(seconds=config.catchup_window)),
        state=ScheduleState(note="hitl feedback loop"),
    )


async def ensure_schedule(client: Client, *, task_queue: str,
                          config: RecalibrationSchedule | None = None,
                          update: bool = True) -> Literal["created", "updated", "exists"]:
    """Create the schedule, or (``update``) bring an existing one to ``config``."""
    config = config or RecalibrationSchedule()
    wanted = build_schedule(config, task_queue=task_queue)
    try:
        await client.create_schedule(config.schedule_id, wanted)
        return "created"
    except ScheduleAlreadyRunningError:
        if not update:
            return "exists"

    def replace(current: ScheduleUpdateInput) -> ScheduleUpdate:
        wanted.state = current.description.schedule.state  # an operator's pause stands
        return ScheduleUpdate(schedule=wanted)

    await client.get_schedule_handle(config.schedule_id).update(replace)
    return "updated"


async def schedule_status(client: Client, schedule_id: str = SCHEDULE_ID) -> ScheduleStatus:
    try:
        description = await client.get_schedule_handle(schedule_id).describe()
    except RPCError as exc:
        raise _missing(exc, schedule_id) from exc
    spec, info = description.schedule.spec, description.info
    # The server keeps a cron as a structured calendar; it is shown as a cron again.
    crons = [*spec.cron_expressions, *(_as_cron(c) for c in spec.calendars)]
    cadence = (f"every {format_duration(spec.intervals[0].every.total_seconds())}"
               if spec.intervals else f"cron {', '.join(crons)} (UTC)")
    running = {a.workflow_id for a in info.running_actions
               if isinstance(a, ScheduleActionExecutionStartWorkflow)}
    runs = [ScheduleRun(workflow_id=r.action.workflow_id, started_at=r.started_at,
                        running=r.action.workflow_id in running)
            for r in reversed(info.recent_actions)
            if isinstance(r.action, ScheduleActionExecutionStartWorkflow)]
    return ScheduleStatus(schedule_id=schedule_id, cadence=cadence,
                          paused=description.schedule.state.paused,
                          next_runs=list(info.next_action_times[:3]), runs=runs,
                          skipped_overlap=info.num_actions_skipped_overlap)


async def trigger_schedule(client: Client, schedule_id: str = SCHEDULE_ID, *,
                           within: float = 10.0) -> str | None:
    """Run the schedule's action now; the started run's workflow ID, or None when it
    was skipped because a run is still going (the schedule's overlap policy)."""
    before = await schedule_status(client, schedule_id)
    known = {run.workflow_id for run in before.runs}
    await client.get_schedule_handle(schedule_id).trigger()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        now = await schedule_status(client, schedule_id)
        new = [run.workflow_id for run in now.runs if run.workflow_id not in known]
        if new:
            return new[0]
        if now.skipped_overlap > before.skipped_overlap:
            return None
        await asyncio.sleep(0.2)
    raise InputError(f"schedule {schedule_id}: the triggered run did not show within "
                     f"{within:g}s", field="schedule_id")


_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day_of_month", 1, 31), ("month", 1, 12),
                ("day_of_week", 0, 6))


def _as_cron(calendar: ScheduleCalendarSpec) -> str:
    fields = []
    for name, low, high in _CRON_FIELDS:
        ranges: Sequence[ScheduleRange] = getattr(calendar, name)
        if not ranges or (len(ranges) == 1 and ranges[0].start <= low
                          and max(ranges[0].end, ranges[0].start) >= high
                          and ranges[0].step <= 1):
            fields.append("*")
            continue
        parts = []
        for r in ranges:
            part = str(r.start) if r.end <= r.start else f"{r.start}-{r.end}"
            parts.append(part + (f"/{r.step}" if r.step > 1 else ""))
        fields.append(",".join(parts))
    return " ".join(fields)


def _missing(exc: RPCError, schedule_id: str) -> Exception:
    if exc.status == RPCStatusCode.NOT_FOUND:
        return InputError(f"schedule_id: no schedule {schedule_id!r} (run `hitl schedule "
                          "ensure`)", field="schedule_id")
    return exc

