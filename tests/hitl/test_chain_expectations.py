"""`hitl audit verify` holds each finished decision's record against its chain: a chain
deleted whole, or cut back with its head, is named; `--expect` catches what the record
cannot (a rolled-back review, a rewritten head). On SQLite and PostgreSQL, with rows
written by the real activities and a real workflow, tampered with in SQL."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import ActivityEnvironment

from activities.executor import ExecutorActivities
from activities.store import StoreActivities
from hitl.cli_audit import run_audit
from hitl.enums import DecisionStatus, ExecutionPhase, RiskLevel, Verdict, Zone
from hitl.payloads import ExecuteInput, RecordDecisionInput, RecordReviewInput
from hitl.request import DecisionRequest
from hitl.review import ApproveInput, RejectInput, ReviewRecord
from hitl.settings import Settings
from hitl.state import DecisionState, Delivery
from hitl.store import ExecutionRow, ReviewRow, session_scope
from tests.conftest import WorkerFactory, register_reviewers
from tests.factories import make_request
from tests.reviewing import approve, reject

pytestmark = pytest.mark.timeout(90)
AT = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)


def verify(engine: Engine, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """``hitl audit verify`` in this process: exit code, stdout, stderr."""
    monkeypatch.setenv("HITL_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_audit(["verify", *args])
    return code, out.getvalue(), err.getvalue()


def sql(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), params)


def digest_of(out: str) -> str:
    [line] = [line for line in out.splitlines() if line.startswith("head digest: ")]
    return line.split()[2]


def delete_chain(engine: Engine, decision_id: str) -> None:
    """Every chain row of a decision and its head: what the chain alone cannot see."""
    for table in ("reviews", "executions", "audit_chain_heads"):
        sql(engine, f"DELETE FROM {table} WHERE decision_id = :d", d=decision_id)


def roll_back_one(engine: Engine, decision_id: str) -> None:
    """Delete the chain's last row and move the head back to the one before it."""
    with session_scope(engine) as session:
        rows: list[ReviewRow | ExecutionRow] = [
            *session.exec(select(ReviewRow).where(ReviewRow.decision_id == decision_id)),
            *session.exec(select(ExecutionRow).where(ExecutionRow.decision_id == decision_id))]
    *earlier, last = sorted(rows, key=lambda r: r.seq or 0)
    table = "reviews" if isinstance(last, ReviewRow) else "executions"
    sql(engine, f"DELETE FROM {table} WHERE id = :id", id=last.id)
    previous = earlier[-1]
    sql(engine, "UPDATE audit_chain_heads SET seq = :s, head_hash = :h WHERE decision_id = :d",
        s=previous.seq, h=previous.record_hash, d=decision_id)


# ----------------------------------------------------- rows from the real activities

def review(decision_id: str, verdict: Verdict, request_id: str = "req-1") -> RecordReviewInput:
    return RecordReviewInput(
        decision_id=decision_id, task_type="refund_request", confidence=0.72, zone="queue",
        risk="medium", review=ReviewRecord(
            request_id=request_id, reviewer="alice", verdict=verdict, reason="checked",
            received_at=AT, latency_seconds=30.0))


async def gated_decision(engine: Engine, verdict: Verdict = Verdict.APPROVE,
                         *, reversible: bool = False) -> DecisionRequest:
    """A QUEUE decision as the workflow leaves it: the deciding review (and, approved,
    the execution it released) written by the executor, then the final record."""
    request = make_request(task_type="refund_request", confidence=0.72, action={
        "type": "refund", "params": {"amount": 12.5}, "reversible": reversible})
    decision_id = request.decision_id
    deciding = review(decision_id, verdict)
    state = DecisionState(
        decision_id=decision_id, task_type=request.task_type, confidence=0.72,
        reversible=reversible, zone=Zone.QUEUE, risk=RiskLevel.MEDIUM, submitted_at=AT,
        reviews=[deciding.review], finished_at=AT)
    if verdict is Verdict.REJECT:
        phases = []
    elif reversible:  # delivered when the SLA passed, confirmed by the approval
        phases = [ExecutionPhase.PROVISIONAL, ExecutionPhase.CONFIRM]
    else:
        phases = [ExecutionPhase.EXECUTE]
    store = StoreActivities(engine=engine)
    async with httpx.AsyncClient() as client:
        executor = ExecutorActivities(engine=engine, client=client,
                                      settings=Settings(executor_timeout_seconds=5))
        for phase in phases:
            result = await ActivityEnvironment().run(executor.execute_action, ExecuteInput(
                decision_id=decision_id, phase=phase, action=request.action, output=request.output,
                reviews=[] if phase is ExecutionPhase.PROVISIONAL else [deciding]))
            state.deliveries.append(Delivery(phase=phase, output=request.output,
                                             at=result.executed_at, executor=result.executor))
    if not phases:
        ActivityEnvironment().run(store.record_review, deciding)
    state.status = {Verdict.APPROVE: DecisionStatus.EXECUTED,
                    Verdict.REJECT: DecisionStatus.REJECTED}[verdict]
    ActivityEnvironment().run(store.record_decision,
                              RecordDecisionInput(request=request, state=state))
    return request


async def test_a_chain_deleted_whole_is_named(engine: Engine,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    decision_id = (await gated_decision(engine)).decision_id
    bystanders = [(await gated_decision(engine, Verdict.REJECT)).decision_id,
                  (await gated_decision(engine, reversible=True)).decision_id]
    code, out, err = verify(engine, monkeypatch)  # as written: intact, nothing missing
    assert (code, err) == (0, "")
    assert "audit chain: intact: 3 decisions, 6 records\n" in out
    assert "BROKEN" not in out and "GAP" not in out
    delete_chain(engine, decision_id)
    code, out, _ = verify(engine, monkeypatch)
    assert code == 1
    assert (f"BROKEN audit chain (decision {decision_id}): deleted: the decision is executed "
            "with 1 delivery (execute), but the store holds no audit chain for it") in out
    assert out.count("BROKEN") == 1 and "1 broken link: 3 decisions, 4 records" in out
    # A decision known only by its record is verified, not an unknown --decision.
    code, out, _ = verify(engine, monkeypatch, "--decision", decision_id)
    assert code == 1 and f"decision {decision_id}" in out
    for bystander in bystanders:
        assert verify(engine, monkeypatch, "--decision", bystander)[0] == 0


async def test_a_chain_rolled_back_with_its_head_is_named(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Approve (review, seq 1) then execute (seq 2): dropping the execution and moving
    the head back to the review leaves a chain that links perfectly."""
    decision_id = (await gated_decision(engine)).decision_id
    provisional = (await gated_decision(engine, reversible=True)).decision_id
    roll_back_one(engine, decision_id)
    roll_back_one(engine, provisional)  # the confirmation goes; the provisional stays
    code, out, _ = verify(engine, monkeypatch, "--json")
    assert code == 1
    report = json.loads(out)
    assert {(b["decision_id"], b["table"], b["kind"]) for b in report["breaks"]} == {
        (decision_id, "executions", "deleted"), (provisional, "executions", "deleted")}
    [confirm] = [b for b in report["breaks"] if b["decision_id"] == provisional]
    assert confirm["detail"].startswith("the decision record lists a confirm delivery at ")
    code, out, _ = verify(engine, monkeypatch, "--decision", decision_id)
    assert code == 1
    assert (f"BROKEN executions (decision {decision_id}): deleted: the decision record lists "
            "a execute delivery at ") in out


async def test_expect_catches_what_the_record_cannot(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rejected decision guarantees no record (its review is written in the background):
    rolling its review back is a gap, and a head digest kept outside catches it."""
    rejected = (await gated_decision(engine, Verdict.REJECT)).decision_id
    other = (await gated_decision(engine)).decision_id
    code, out, _ = verify(engine, monkeypatch)
    digest = digest_of(out)
    assert verify(engine, monkeypatch, "--expect", digest)[0] == 0
    assert verify(engine, monkeypatch, "--expect", digest.removeprefix("sha256:").upper())[0] == 0
    delete_chain(engine, rejected)
    code, out, _ = verify(engine, monkeypatch)
    assert code == 0  # nothing guaranteed is missing ...
    assert (f"GAP reviews (decision {rejected}): review req-1 (reject by alice) is in the "
            "decision record but not in the store") in out
    assert "audit chain: intact: 2 decisions, 2 records, 1 gap" in out
    code, out, _ = verify(engine, monkeypatch, "--expect", digest)
    assert code == 1  # ... but the heads are not the ones recorded
    assert (f"BROKEN head digest: {digest_of(out)} differs from --expect {digest}: chain heads "
            "were rewritten, rolled back, deleted or appended to") in out
    code, out, _ = verify(engine, monkeypatch, "--expect", digest, "--json")
    assert code == 1 and json.loads(out)["expected"] == digest and not json.loads(out)["intact"]
    assert verify(engine, monkeypatch, "--decision", other)[0] == 0


@pytest.mark.parametrize("expect", ["", "sha256:", "sha256:abc", "md5:" + "0" * 64, "0" * 63])
def test_a_malformed_expect_exits_2(engine: Engine, monkeypatch: pytest.MonkeyPatch,
                                    expect: str) -> None:
    code, out, err = verify(engine, monkeypatch, "--expect", expect)
    assert (code, out) == (2, "")
    assert err.startswith("hitl audit: error: --expect: must be a head digest")


async def test_an_unreadable_decision_record_is_named(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    decision_id = (await gated_decision(engine)).decision_id
    sql(engine, "UPDATE decisions SET state_json = '{\"deliveries\": 7}' WHERE decision_id = :d",
        d=decision_id)
    code, out, _ = verify(engine, monkeypatch)
    assert code == 1
    assert f"BROKEN decisions (decision {decision_id}): edited: the decision record's state" in out


# ------------------------------------------------------------- a real workflow run

async def test_decisions_run_by_the_worker_verify_and_their_deletion_is_named(
        engine: Engine, hitl_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """AUTO, approved, rejected and respond-now-then-confirmed decisions, as the worker
    writes them: intact with no gap; then each kind of deletion is named."""
    register_reviewers(engine, ("exp-ann",))
    auto = make_request(confidence=0.99)
    approved = make_request(task_type="refund_request", confidence=0.6, action={
        "type": "refund", "params": {"amount": 20}, "reversible": False})
    rejected = make_request(task_type="refund_request", confidence=0.6, action={
        "type": "refund", "params": {"amount": 30}, "reversible": False})
    provisional = make_request(confidence=0.7)  # the respond-now band: delivered, then reviewed
    async with hitl_worker(engine=engine) as hitl:
        for request in (auto, approved, rejected, provisional):
            await hitl.submit(request)
        await approve(hitl, approved.decision_id, ApproveInput(reviewer="exp-ann", reason="ok"))
        await reject(hitl, rejected.decision_id, RejectInput(reviewer="exp-ann", reason="no"))
        await until_status(hitl, provisional.decision_id, DecisionStatus.PROVISIONAL)
        await approve(hitl, provisional.decision_id, ApproveInput(reviewer="exp-ann"))
        finals = {r.decision_id: await hitl.wait(r.decision_id, timeout=30)
                  for r in (auto, approved, rejected, provisional)}
    assert [f.status for f in finals.values()] == [
        DecisionStatus.EXECUTED, DecisionStatus.EXECUTED, DecisionStatus.REJECTED,
        DecisionStatus.EXECUTED]
    assert [d.phase for d in finals[provisional.decision_id].deliveries] == [
        ExecutionPhase.PROVISIONAL, ExecutionPhase.CONFIRM]
    code, out, _ = verify(engine, monkeypatch)
    assert code == 0 and "BROKEN" not in out and "GAP" not in out, out
    digest = digest_of(out)

    delete_chain(engine, auto.decision_id)
    roll_back_one(engine, approved.decision_id)
    roll_back_one(engine, provisional.decision_id)
    code, out, _ = verify(engine, monkeypatch, "--expect", digest)
    assert code == 1
    assert f"BROKEN audit chain (decision {auto.decision_id}): deleted:" in out
    assert f"BROKEN executions (decision {approved.decision_id}): deleted:" in out
    assert f"BROKEN executions (decision {provisional.decision_id}): deleted:" in out
    assert f"decision {rejected.decision_id}" not in out
    assert "BROKEN head digest:" in out


async def until_status(hitl: Any, decision_id: str, status: DecisionStatus) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while (await hitl.status(decision_id)).status is not status:
        assert asyncio.get_running_loop().time() < deadline, f"never {status.value}"
        await asyncio.sleep(0.1)
