"""The feedback loop on the real dev server: the schedule, the apply gate, auto-apply."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import Client, ScheduleOverlapPolicy, WorkflowHandle
from temporalio.service import RPCError
from temporalio.worker import Replayer

from hitl import policy_versions as versions
from hitl.api import create_app
from hitl.client import HitlClient
from hitl.connection import data_converter
from hitl.enums import DecisionStatus, RiskLevel, Zone
from hitl.policy import load_policy
from hitl.recalibration import (
    RecalibrationInput,
    RecalibrationOutcome,
    RecalibrationResult,
    feedback_usage,
    gate_id,
)
from hitl.review import ApproveInput
from hitl.schedules import (
    RecalibrationSchedule,
    ensure_schedule,
    schedule_status,
    trigger_schedule,
)
from hitl.store import DecisionRecord
from tests.conftest import WorkerFactory, register_reviewers
from tests.hitl.test_cli import hitl
from tests.hitl.test_recalibration import seed_reviews
from tests.reviewing import approve
from worker.main import SANDBOX
from workflows.recalibration import RecalibrationWorkflow

pytestmark = pytest.mark.timeout(90)
FILE_POLICY = load_policy().full_version


def _seed(engine: Engine, *, beyond_bounds: bool) -> None:
    """Reviews of yesterday that move ticket_classification from 0.80 to 0.86
    (beyond the 0.02 bound) or to 0.82 (within it); see tests/hitl/test_recalibration.py."""
    at = datetime.now(UTC) - timedelta(days=1)
    if beyond_bounds:
        seed_reviews(engine, "ticket_classification", 0.95, 300, at=at)
        seed_reviews(engine, "ticket_classification", 0.85, 200, wrong=40, at=at)
    else:
        seed_reviews(engine, "ticket_classification", 0.82, 300, at=at)
        seed_reviews(engine, "ticket_classification", 0.81, 100, wrong=30, at=at)


async def _until(predicate, within: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


def _versions(engine: Engine, source: str = "recalibration") -> list[versions.PolicyVersionRow]:
    with Session(engine) as session:
        return list(session.exec(select(versions.PolicyVersionRow).where(
            versions.PolicyVersionRow.source == source)).all())


def _active(engine: Engine) -> str | None:
    with Session(engine) as session:
        row = versions.active(session)
        return row.version if row else None


async def _start(client: Client, task_queue: str) -> WorkflowHandle[object, RecalibrationResult]:
    return await client.start_workflow(
        "RecalibrationWorkflow", RecalibrationInput(), id=f"recal-{uuid.uuid4().hex[:10]}",
        task_queue=task_queue, result_type=RecalibrationResult)


async def _pending_gate(hitl: HitlClient, engine: Engine) -> str:
    """The apply gate's decision ID once it waits for a person."""
    async def proposed() -> bool:
        return bool(_versions(engine))

    await _until(proposed)
    decision_id = gate_id(_versions(engine)[0].version)

    async def waiting() -> bool:
        try:
            return (await hitl.status(decision_id)).status is DecisionStatus.PENDING_REVIEW
        except Exception:  # noqa: BLE001 - not started yet
            return False

    await _until(waiting)
    return decision_id


# ------------------------------------------------------------------ the gate

async def test_a_change_beyond_bounds_waits_for_two_approvers_then_applies(
        hitl_worker: WorkerFactory, sqlite_engine: Engine, client: Client,
        task_queue: str) -> None:
    _seed(sqlite_engine, beyond_bounds=True)
    async with hitl_worker() as hitl:
        handle = await _start(client, task_queue)
        gate = await _pending_gate(hitl, sqlite_engine)
        [proposal] = _versions(sqlite_engine)
        assert proposal.status == "proposed" and _active(sqlite_engine) is None
        state = await hitl.status(gate)
        assert (state.task_type, state.risk, state.zone) == (
            "policy_change", RiskLevel.CRITICAL, Zone.ESCALATE)
        assert state.approvals_required == 2 and state.reversible is False

        first = await approve(hitl, gate, ApproveInput(reviewer="alice", reason="stricter, ok"))
        assert first.message.startswith("approval 1 of 2 recorded (sha256:")
        assert first.message.endswith("another approver is needed")
        assert _active(sqlite_engine) is None  # one approver applies nothing
        await approve(hitl, gate, ApproveInput(reviewer="bob", reason="agreed"))
        result = await handle.result()
    # Deterministic: the whole gated run replays from its history.
    await Replayer(workflows=[RecalibrationWorkflow], data_converter=data_converter(),
                   workflow_runner=SANDBOX).replay_workflow(await handle.fetch_history())

    assert result.outcome is RecalibrationOutcome.APPROVED
    assert (result.gate_id, result.gate_status) == (gate, "executed")
    assert result.version == proposal.version and result.base_version == FILE_POLICY
    assert _active(sqlite_engine) == proposal.version
    with Session(sqlite_engine) as session:
        row = versions.get(session, proposal.version)
        assert row is not None and row.activated_by == "alice, bob"
        applied = versions.policy_of(row)
        record = session.get(DecisionRecord, gate)
    assert applied.thresholds.task_types["ticket_classification"] == 0.86
    usage = feedback_usage(proposal.proposal)
    assert usage is not None and (usage.reviews_used, usage.corrections_used) == (500, 40)
    # What the reviewer read: the diff as the decision's output, figures in its context.
    assert record is not None
    request = json.loads(record.request_json)
    assert request["action"] == {"type": "apply_policy", "params": {"version": proposal.version},
                                 "reversible": False, "target_url": None}
    assert "ticket_classification  0.80 -> 0.86" in request["output"]
    assert "moves 0.06 (0.80 -> 0.86), more than 0.02" in request["output"]
    assert request["context"]["threshold ticket_classification"].startswith("0.80 -> 0.86")


async def test_a_rejected_gate_rejects_the_version_and_keeps_the_policy(
        hitl_worker: WorkerFactory, sqlite_engine: Engine, client: Client,
        task_queue: str) -> None:
    _seed(sqlite_engine, beyond_bounds=True)
    [token] = register_reviewers(sqlite_engine, ("opal",)).values()
    async with hitl_worker() as hitl:
        handle = await _start(client, task_queue)
        gate = await _pending_gate(hitl, sqlite_engine)
        await approve(hitl, gate, ApproveInput(reviewer="alice", reason="fine by me"))
        # The operator decides in the review app: the diff is the output, figures the context.
        app = create_app(hitl=hitl, engine=sqlite_engine)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://hitl.test") as http:
            auth = {"Authorization": f"Bearer {token}"}
            view = (await http.get(f"/api/decisions/{gate}/review", headers=auth)).json()
            assert view["request"]["output"].startswith("Proposed policy recal-")
            assert "Needs approval because:" in view["request"]["output"]
            assert view["request"]["context"]["threshold ticket_classification"].startswith(
                "0.80 -> 0.86")
            response = await http.post(f"/api/decisions/{gate}/reject", headers=auth, json={
                "reason": "too few automations", "content_sha256": view["content"]["sha256"]})
            assert response.status_code == 200, response.text
        result = await handle.result()
    assert (result.outcome, result.gate_status) == (RecalibrationOutcome.REJECTED, "rejected")
    [row] = _versions(sqlite_engine)
    assert row.status == "rejected"
    assert row.note is not None and "opal" in row.note
    assert f"apply gate {gate} ended rejected" in row.note
    assert _active(sqlite_engine) is None  # the file policy still applies


async def test_a_change_within_bounds_applies_without_a_gate(
        hitl_worker: WorkerFactory, sqlite_engine: Engine, client: Client,
        task_queue: str) -> None:
    _seed(sqlite_engine, beyond_bounds=False)
    async with hitl_worker():
        result = await (await _start(client, task_queue)).result()
    assert result.outcome is RecalibrationOutcome.APPLIED
    assert result.gate_id is None and result.violations == []
    assert result.version is not None and _active(sqlite_engine) == result.version
    with Session(sqlite_engine) as session:
        row = versions.get(session, result.version)
        assert row is not None and row.activated_by == "hitl-recalibration"
        assert versions.policy_of(row).thresholds.task_types["ticket_classification"] == 0.82
    with pytest.raises(RPCError):  # no apply gate was started
        await client.get_workflow_handle(gate_id(result.version)).describe()


async def test_no_labels_no_change(hitl_worker: WorkerFactory, sqlite_engine: Engine,
                                   client: Client, task_queue: str) -> None:
    async with hitl_worker():
        result = await (await _start(client, task_queue)).result()
    assert (result.outcome, result.version, result.feedback.labels) == (
        RecalibrationOutcome.NO_CHANGE, None, 0)
    assert _versions(sqlite_engine) == [] and _active(sqlite_engine) is None


# ------------------------------------------------------------------ schedule

async def test_the_schedule_is_ensured_idempotently_and_runs_when_triggered(
        hitl_worker: WorkerFactory, sqlite_engine: Engine, client: Client,
        task_queue: str) -> None:
    config = RecalibrationSchedule(schedule_id=f"hitl-recalibration-{uuid.uuid4().hex[:8]}")
    assert await ensure_schedule(client, task_queue=task_queue, config=config) == "created"
    try:
        handle = client.get_schedule_handle(config.schedule_id)
        await handle.pause(note="paused by an operator")
        assert await ensure_schedule(client, task_queue=task_queue, config=config) == "updated"
        assert await ensure_schedule(client, task_queue=task_queue, config=config,
                                     update=False) == "exists"
        description = await handle.describe()
        # The server keeps the cron as a calendar: Mondays (1) at 03:00.
        [calendar] = description.schedule.spec.calendars
        assert [(r.start, r.end) for r in calendar.day_of_week] == [(1, 1)]
        assert [(r.start, r.end) for r in calendar.hour] == [(3, 3)]
        assert description.schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
        assert description.schedule.policy.catchup_window == timedelta(days=1)
        assert description.schedule.state.paused  # the update kept the operator's pause
        status = await schedule_status(client, config.schedule_id)
        assert status.cadence == "cron 0 3 * * 1 (UTC)" and status.runs == []

        _seed(sqlite_engine, beyond_bounds=False)
        async with hitl_worker():
            run_id = await trigger_schedule(client, config.schedule_id)
            assert run_id is not None and run_id.startswith(config.schedule_id)
            result = await client.get_workflow_handle(
                run_id, result_type=RecalibrationResult).result()
        assert result.outcome is RecalibrationOutcome.APPLIED
        [row] = _versions(sqlite_engine)
        assert row.version == result.version and row.source == "recalibration"
        usage = feedback_usage(row.proposal)
        assert usage is not None and usage.reviews_used == 400
        assert json.loads(row.proposal or "{}")["workflow_id"] == run_id
        status = await schedule_status(client, config.schedule_id)
        assert [run.workflow_id for run in status.runs] == [run_id]
    finally:
        await client.get_schedule_handle(config.schedule_id).delete()


async def test_the_schedule_cli_ensures_triggers_and_reports(
        hitl_worker: WorkerFactory, client: Client, task_queue: str, tmp_path: Path) -> None:
    env = {"HITL_TEMPORAL_ADDRESS": client.service_client.config.target_host,
           "HITL_NAMESPACE": client.namespace, "HITL_TASK_QUEUE": task_queue,
           "HITL_DATA_DIR": str(tmp_path)}
    schedule_id = f"hitl-recalibration-{uuid.uuid4().hex[:8]}"
    code, _, err = await hitl("schedule", "ensure", "--id", schedule_id, "--cron", "0 3 * *",
                              env=env)
    assert code == 2 and "cron" in err
    code, _, err = await hitl("schedule", "ensure", "--id", schedule_id, "--max-error", "2",
                              env=env)
    assert code == 2 and "max_error" in err
    code, out, _ = await hitl("schedule", "ensure", "--id", schedule_id, "--every", "12h", env=env)
    try:
        assert code == 0 and out.split("\t")[:3] == [schedule_id, "created", "every 12h"]
        async with hitl_worker():
            code, out, err = await hitl("schedule", "trigger", "--id", schedule_id, "--wait",
                                        env=env)
        assert code == 0, err
        assert out.split("\t")[1:3] == ["no_change", "version -"]
        code, out, _ = await hitl("schedule", "status", "--id", schedule_id, "--json", env=env)
        status = json.loads(out)
        assert status["cadence"] == "every 12h" and len(status["runs"]) == 1
    finally:
        await client.get_schedule_handle(schedule_id).delete()
    code, _, err = await hitl("schedule", "status", "--id", schedule_id, env=env)
    assert code == 2 and f"no schedule {schedule_id!r}" in err
