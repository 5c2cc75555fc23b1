"""The audit chain on SQLite and PostgreSQL: built as records are written, never forked
by concurrent or retried writers, backfilled by the migration, and `hitl audit verify`
names every row that was edited, deleted, moved or slipped in."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import ActivityEnvironment

from activities.executor import ExecutorActivities
from activities.store import StoreActivities
from hitl.audit_chain import (
    CHAINED_FIELDS,
    EXECUTIONS,
    REVIEWS,
    BreakKind,
    ChainHead,
    genesis_hash,
    head_digest,
    record_hash,
)
from hitl.cli_audit import run_audit, verify_store
from hitl.enums import DecisionStatus, ErrorCategory, ExecutionPhase, Verdict
from hitl.payloads import ExecuteInput, RecordReviewInput
from hitl.request import Action
from hitl.review import ApproveInput, ReviewRecord
from hitl.settings import Settings
from hitl.store import (
    AuditChainHead,
    ExecutionRow,
    ReviewRow,
    alembic_config,
    init_store,
    record_execution,
    record_review,
    session_scope,
)
from tests.conftest import BIN, WorkerFactory, register_reviewers
from tests.factories import make_request
from tests.reviewing import approve

pytestmark = pytest.mark.timeout(90)
REVIEWED = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def new_id() -> str:
    return f"d-{uuid.uuid4().hex[:16]}"


def review(decision_id: str, request_id: str = "r1", **overrides: Any) -> ReviewRow:
    data: dict[str, Any] = {
        "decision_id": decision_id, "request_id": request_id, "task_type": "refund_request",
        "reviewer": "alice", "verdict": "approve", "reason": "matches the order",
        "model_confidence": 0.72, "zone": "queue", "risk": "medium",
        "reviewed_at": REVIEWED,
    }
    return ReviewRow(**{**data, **overrides})


def execution(decision_id: str, phase: str = "execute", **overrides: Any) -> ExecutionRow:
    data: dict[str, Any] = {
        "decision_id": decision_id, "phase": phase, "executor": "ledger",
        "action_type": "refund", "idempotency_key": f"{decision_id}:{phase}",
        "output": "Refund 12.50", "params_json": '{"amount": 12.5}',
    }
    return ExecutionRow(**{**data, **overrides})


def links(engine: Engine, decision_id: str) -> list[tuple[str, int, int | None]]:
    """(table, row id, seq) of a decision's records, in chain order."""
    with session_scope(engine) as session:
        found = [(REVIEWS, r.id or 0, r.seq) for r in session.exec(
            select(ReviewRow).where(ReviewRow.decision_id == decision_id))]
        found += [(EXECUTIONS, e.id or 0, e.seq) for e in session.exec(
            select(ExecutionRow).where(ExecutionRow.decision_id == decision_id))]
    return sorted(found, key=lambda link: (link[2] or 0, link[0], link[1]))


def head(engine: Engine, decision_id: str) -> AuditChainHead | None:
    with session_scope(engine) as session:
        return session.get(AuditChainHead, decision_id)


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def verify(engine: Engine, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """``hitl audit verify`` in this process: exit code, stdout, stderr."""
    monkeypatch.setenv("HITL_DATABASE_URL", url_of(engine))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_audit(["verify", *args])
    return code, out.getvalue(), err.getvalue()


def write_chain(engine: Engine, decision_id: str) -> None:
    """Two reviews and an execution: seq 1, 2, 3."""
    with session_scope(engine) as session:
        record_review(session=session, review=review(decision_id, "r1"))
        record_review(session=session, review=review(
            decision_id, "r2", reviewer="bob", verdict="reject", reason="wrong amount",
            correct_answer="Refund 10.00", error_category="wrong_amount",
            reviewed_at=REVIEWED + timedelta(seconds=30)))
        record_execution(session=session, execution=execution(decision_id))


# ------------------------------------------------------------- building the chain

def test_records_link_in_write_order_across_tables(engine: Engine) -> None:
    decision_id, other = new_id(), new_id()
    write_chain(engine, decision_id)
    with session_scope(engine) as session:
        record_review(session=session, review=review(other))
        [r1, r2] = session.exec(select(ReviewRow).where(
            ReviewRow.decision_id == decision_id).order_by(ReviewRow.seq)).all()  # type: ignore[arg-type]
        [ex] = session.exec(select(ExecutionRow).where(
            ExecutionRow.decision_id == decision_id)).all()
    assert [(r1.seq, r2.seq, ex.seq)] == [(1, 2, 3)]
    assert r1.prev_hash == genesis_hash(decision_id) != genesis_hash(other)
    assert (r2.prev_hash, ex.prev_hash) == (r1.record_hash, r2.record_hash)
    # The stored hash is the one recomputed from what the database hands back.
    assert r2.record_hash == record_hash(table=REVIEWS, seq=2, prev_hash=r1.record_hash or "",
                                         content=r2.model_dump())
    stored = head(engine, decision_id)
    assert stored is not None and (stored.seq, stored.head_hash) == (3, ex.record_hash)
    assert links(engine, other) == [(REVIEWS, links(engine, other)[0][1], 1)]
    with session_scope(engine) as session:
        report = verify_store(session=session)
    assert report.intact and (report.decisions, report.records) == (2, 4)


def test_every_content_column_is_hashed() -> None:
    """A column added to a chained table must be a deliberate choice: hashed (a new
    chain version) or knowingly left out here."""
    links_only = {"id", "seq", "prev_hash", "record_hash"}
    for table, model in ((REVIEWS, ReviewRow), (EXECUTIONS, ExecutionRow)):
        columns = set(model.__table__.columns.keys())  # type: ignore[attr-defined]
        assert columns - links_only == {name for name, _ in CHAINED_FIELDS[table]}


async def test_workflow_decision_chains_reviews_and_execution(
        engine: Engine, hitl_worker: WorkerFactory) -> None:
    """A four-eyes decision on the dev server: two reviews and the execution, one chain."""
    # On SQLite `engine` and the worker's `sqlite_engine` share one file: new names.
    register_reviewers(engine, ("chain-ann", "chain-ben"))
    async with hitl_worker(engine=engine) as hitl:
        request = make_request(task_type="account_deletion", confidence=0.99, action={
            "type": "delete_account", "params": {"account_id": "a9"}, "reversible": False})
        await hitl.submit(request)
        await approve(hitl, request.decision_id, ApproveInput(reviewer="chain-ann", reason="ok"))
        await approve(hitl, request.decision_id,
                      ApproveInput(reviewer="chain-ben", reason="agreed"))
        final = await hitl.wait(request.decision_id, timeout=30)
        assert final.status is DecisionStatus.EXECUTED
        deadline = asyncio.get_running_loop().time() + 15
        while len(links(engine, request.decision_id)) < 3:  # reviews record in the background
            assert asyncio.get_running_loop().time() < deadline, "records not written"
            await asyncio.sleep(0.1)
    chain = links(engine, request.decision_id)
    assert [seq for _, _, seq in chain] == [1, 2, 3]
    assert sorted(table for table, _, _ in chain) == [EXECUTIONS, REVIEWS, REVIEWS]
    cli = await asyncio.to_thread(
        subprocess.run,
        [str(BIN / "hitl"), "audit", "verify", "--decision", request.decision_id, "--json"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "HITL_DATABASE_URL": url_of(engine)}, check=False)
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert report["intact"] and report["records"] == 3 and report["breaks"] == []
    assert report["heads"][0]["seq"] == 3
    assert report["digest"].startswith("sha256:")


# -------------------------------------------------------- concurrency and retries

def test_concurrent_appends_never_fork(engine: Engine) -> None:
    """Eight writers start together on one decision (reviews and executions mixed):
    every record gets its own place and the chain verifies."""
    decision_id = new_id()
    writers = 8
    start = threading.Barrier(writers, timeout=20)

    def write(index: int) -> bool:
        start.wait()
        with session_scope(engine) as session:
            if index % 2:
                return record_execution(session=session, execution=execution(
                    decision_id, phase=f"p{index}"))[1]
            return record_review(session=session, review=review(decision_id, f"r{index}"))[1]

    with ThreadPoolExecutor(max_workers=writers) as pool:
        assert all(pool.map(write, range(writers)))
    assert [seq for _, _, seq in links(engine, decision_id)] == list(range(1, writers + 1))
    stored = head(engine, decision_id)
    assert stored is not None and stored.seq == writers
    with session_scope(engine) as session:
        assert verify_store(session=session, decision_id=decision_id).intact


def test_racing_retries_of_one_review_append_once(engine: Engine) -> None:
    """Four copies of the same review (a retry racing the original) at once: one
    row, one link, and the losers' claimed places are given back."""
    decision_id = new_id()
    copies = 4
    start = threading.Barrier(copies, timeout=20)

    def write(_: int) -> tuple[int | None, bool]:
        start.wait()
        with session_scope(engine) as session:
            row, inserted = record_review(session=session, review=review(decision_id))
            return row.id, inserted

    with ThreadPoolExecutor(max_workers=copies) as pool:
        results = list(pool.map(write, range(copies)))
    assert sum(inserted for _, inserted in results) == 1
    assert len({row_id for row_id, _ in results}) == 1
    stored = head(engine, decision_id)
    assert stored is not None and stored.seq == 1
    with session_scope(engine) as session:
        record_execution(session=session, execution=execution(decision_id))
    assert [seq for _, _, seq in links(engine, decision_id)] == [1, 2]


async def test_activity_retries_do_not_append_twice(engine: Engine) -> None:
    decision_id = new_id()
    store = StoreActivities(engine=engine)
    data = RecordReviewInput(
        decision_id=decision_id, task_type="refund_request", confidence=0.72, zone="queue",
        risk="medium", review=ReviewRecord(
            request_id="req-1", reviewer="bob", verdict=Verdict.REJECT, reason="wrong amount",
            correct_answer="Refund 10.00 EUR", error_category=ErrorCategory.WRONG_AMOUNT,
            edited=False, flag_for_monitoring=False, received_at=REVIEWED,
            latency_seconds=4.5, time_on_page_seconds=2.0))
    assert ActivityEnvironment().run(store.record_review, data).inserted
    assert not ActivityEnvironment().run(store.record_review, data).inserted
    execute = ExecuteInput(decision_id=decision_id, phase=ExecutionPhase.EXECUTE,
                           action=Action(type="refund", params={"amount": 10},
                                         reversible=False), output="Refund 10.00 EUR")
    async with httpx.AsyncClient() as client:
        executor = ExecutorActivities(engine=engine, client=client,
                                      settings=Settings(executor_timeout_seconds=5))
        assert not (await ActivityEnvironment().run(executor.execute_action, execute)).deduplicated
        assert (await ActivityEnvironment().run(executor.execute_action, execute)).deduplicated
    assert [(table, seq) for table, _, seq in links(engine, decision_id)] == [
        (REVIEWS, 1), (EXECUTIONS, 2)]
    stored = head(engine, decision_id)
    assert stored is not None and stored.seq == 2


# ------------------------------------------------------------------- tampering

def test_untampered_store_verifies(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = new_id(), new_id()
    write_chain(engine, first)
    write_chain(engine, second)
    code, out, err = verify(engine, monkeypatch)
    assert (code, err) == (0, "")
    assert "audit chain: intact: 2 decisions, 6 records" in out
    with session_scope(engine) as session:
        heads = [ChainHead(decision_id=h.decision_id, seq=h.seq, head_hash=h.head_hash)
                 for h in session.exec(select(AuditChainHead))]
    assert f"head digest: sha256:{head_digest(heads)}" in out
    code, out, _ = verify(engine, monkeypatch, "--decision", first, "--heads")
    assert code == 0 and f"head {first}\tseq=3\t" in out


def _ids(engine: Engine, decision_id: str) -> tuple[int, int, int]:
    [(_, r1, _), (_, r2, _), (_, ex, _)] = links(engine, decision_id)
    return r1, r2, ex


def _sql(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), params)


def test_edited_reason_is_named(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    decision_id, bystander = new_id(), new_id()
    write_chain(engine, decision_id)
    write_chain(engine, bystander)
    r1, _, _ = _ids(engine, decision_id)
    _sql(engine, "UPDATE reviews SET reason = 'looked fine to me' WHERE id = :id", id=r1)
    code, out, _ = verify(engine, monkeypatch)
    assert code == 1
    assert f"BROKEN reviews row {r1} (decision {decision_id}, seq 1): edited:" in out
    assert out.count("BROKEN") == 1 and "1 broken link:" in out
    assert verify(engine, monkeypatch, "--decision", bystander)[0] == 0


def test_edit_with_recomputed_hash_breaks_the_next_link(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rehashing the edited row itself moves the break to the row after it."""
    decision_id = new_id()
    write_chain(engine, decision_id)
    r1, r2, _ = _ids(engine, decision_id)
    with session_scope(engine) as session:
        row = session.get(ReviewRow, r1)
        assert row is not None
        forged = record_hash(table=REVIEWS, seq=1, prev_hash=row.prev_hash or "",
                             content={**row.model_dump(), "verdict": "reject"})
    _sql(engine, "UPDATE reviews SET verdict = 'reject', record_hash = :h WHERE id = :id",
         h=forged, id=r1)
    code, out, _ = verify(engine, monkeypatch, "--json")
    assert code == 1
    [broken] = json.loads(out)["breaks"]
    assert (broken["table"], broken["row_id"], broken["kind"]) == (
        REVIEWS, r2, BreakKind.REORDERED.value)


def test_deleted_rows_are_named(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    decision_id = new_id()
    write_chain(engine, decision_id)
    r1, r2, ex = _ids(engine, decision_id)
    _sql(engine, "DELETE FROM reviews WHERE id = :id", id=r1)
    code, out, _ = verify(engine, monkeypatch)
    assert code == 1
    assert (f"BROKEN reviews row {r2} (decision {decision_id}, seq 2): deleted: seq 1 before "
            "this row is missing") in out
    _sql(engine, "DELETE FROM executions WHERE id = :id", id=ex)
    code, out, _ = verify(engine, monkeypatch, "--decision", decision_id)
    assert code == 1
    assert (f"BROKEN chain head (decision {decision_id}, seq 3): deleted: the head is at "
            "seq 3 but the last record is at seq 2") in out


def test_swapped_contents_are_named(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    decision_id = new_id()
    write_chain(engine, decision_id)
    r1, r2, _ = _ids(engine, decision_id)
    _sql(engine, "UPDATE reviews SET reviewer = CASE id WHEN :a THEN 'bob' ELSE 'alice' END, "
                 "reason = CASE id WHEN :a THEN 'wrong amount' ELSE 'matches the order' END, "
                 "verdict = CASE id WHEN :a THEN 'reject' ELSE 'approve' END "
                 "WHERE id IN (:a, :b)", a=r1, b=r2)
    code, out, _ = verify(engine, monkeypatch)
    assert code == 1
    assert f"BROKEN reviews row {r1} (decision {decision_id}, seq 1): edited:" in out
    assert f"BROKEN reviews row {r2} (decision {decision_id}, seq 2): edited:" in out


def test_reordered_and_inserted_rows_are_named(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    decision_id = new_id()
    write_chain(engine, decision_id)
    r1, r2, _ = _ids(engine, decision_id)
    # Swap the two reviews' places, link columns and all: each still hashes as written
    # for its old place, so both show as moved.
    _sql(engine, "UPDATE reviews SET seq = -1 WHERE id = :a", a=r1)
    _sql(engine, "UPDATE reviews SET seq = 1 WHERE id = :b", b=r2)
    _sql(engine, "UPDATE reviews SET seq = 2 WHERE id = :a", a=r1)
    code, out, _ = verify(engine, monkeypatch, "--json")
    assert code == 1
    found = {(b["row_id"], b["kind"]) for b in json.loads(out)["breaks"]}
    assert {(r2, "edited"), (r2, "reordered"), (r1, "edited")} <= found

    other = new_id()
    write_chain(engine, other)
    _sql(engine, "INSERT INTO reviews (decision_id, request_id, task_type, reviewer, verdict, "
                 "accepted, reason, edited, flag_for_monitoring, model_confidence, reviewed_at) "
                 "VALUES (:d, 'forged', 'refund_request', 'mallory', 'approve', :t, 'fine', "
                 ":f, :f, 0.9, :at)", d=other, t=True, f=False, at=REVIEWED)
    code, out, _ = verify(engine, monkeypatch, "--decision", other)
    [forged] = [r.id for r in _rows(engine, other) if r.request_id == "forged"]
    assert code == 1
    assert f"BROKEN reviews row {forged} (decision {other}): unchained:" in out


def test_forks_and_replaced_heads_are_named(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    decision_id, other = new_id(), new_id()
    write_chain(engine, decision_id)
    write_chain(engine, other)
    _, _, ex = _ids(engine, decision_id)
    _sql(engine, "UPDATE executions SET seq = 2 WHERE id = :id", id=ex)
    _sql(engine, "UPDATE audit_chain_heads SET head_hash = :h WHERE decision_id = :d",
         h="0" * 64, d=other)
    code, out, _ = verify(engine, monkeypatch)
    assert code == 1
    assert f"BROKEN executions row {ex} (decision {decision_id}, seq 2): forked:" in out
    assert (f"BROKEN chain head (decision {other}, seq 3): head: the head hash differs "
            "from executions row") in out


def _rows(engine: Engine, decision_id: str) -> list[ReviewRow]:
    with session_scope(engine) as session:
        return list(session.exec(select(ReviewRow).where(ReviewRow.decision_id == decision_id)))


def test_bad_arguments_exit_2(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    assert verify(engine, monkeypatch, "--bogus")[0] == 2
    code, _, err = verify(engine, monkeypatch, "--decision", "no-such-decision")
    assert code == 2 and "--decision" in err and "no-such-decision" in err
    cli = subprocess.run([str(BIN / "hitl"), "audit"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "HITL_DATABASE_URL": url_of(engine)},
                         check=False)
    assert cli.returncode == 2 and "hitl audit: error:" in cli.stderr


# ------------------------------------------------------------------- migration

def test_migration_backfills_existing_records(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store at 0002 with records upgrades to a chain that verifies, linked in time
    order (reviews and executions interleaved), with a head per decision."""
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0002")
    assert "audit_chain_heads" not in inspect(engine).get_table_names()
    decision_id, other = new_id(), new_id()
    t0 = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
    reviews = [(decision_id, "late", t0 + timedelta(minutes=5)), (decision_id, "early", t0),
               (other, "only", t0)]
    with engine.begin() as connection:
        for row_decision, request_id, at in reviews:
            connection.execute(text(
                "INSERT INTO reviews (decision_id, request_id, task_type, reviewer, verdict, "
                "accepted, reason, edited, flag_for_monitoring, model_confidence, "
                "reviewed_at) VALUES (:d, :r, 'refund_request', 'alice', 'approve', :t, "
                "'ok', :f, :f, 0.8, :at)"), {"d": row_decision, "r": request_id, "t": True,
                                               "f": False, "at": at})
        connection.execute(text(
            "INSERT INTO executions (decision_id, phase, executor, action_type, "
            "idempotency_key, params_json, executed_at) VALUES (:d, 'execute', 'ledger', "
            "'refund', :k, '{}', :at)"),
            {"d": decision_id, "k": f"{decision_id}:execute", "at": t0 + timedelta(minutes=1)})
    init_store(engine)
    with session_scope(engine) as session:
        by_seq = sorted(session.exec(select(ReviewRow).where(
            ReviewRow.decision_id == decision_id)), key=lambda r: r.seq or 0)
    assert [(r.request_id, r.seq) for r in by_seq] == [("early", 1), ("late", 3)]
    assert [(table, seq) for table, _, seq in links(engine, decision_id)] == [
        (REVIEWS, 1), (EXECUTIONS, 2), (REVIEWS, 3)]
    stored = head(engine, decision_id)
    assert stored is not None and stored.seq == 3
    code, out, _ = verify(engine, monkeypatch)
    assert code == 0 and "intact: 2 decisions, 4 records" in out
    # New writes continue the backfilled chain.
    with session_scope(engine) as session:
        record_execution(session=session, execution=execution(decision_id, phase="confirm"))
    assert [seq for _, _, seq in links(engine, decision_id)] == [1, 2, 3, 4]
    assert verify(engine, monkeypatch)[0] == 0
    _sql(engine, "UPDATE reviews SET reason = 'edited' WHERE request_id = 'only'")
    assert verify(engine, monkeypatch)[0] == 1
