"""The feedback store on SQLite and PostgreSQL: every write is idempotent on its natural key."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import SQLModel, select

from hitl.store import (
    AuditRow,
    DecisionRecord,
    ExecutionRow,
    ReviewRow,
    executions_for,
    find_execution,
    record_audit,
    record_decision,
    record_execution,
    record_review,
    reviews_for,
    session_scope,
)


def new_id() -> str:
    return f"d-{uuid.uuid4().hex[:16]}"


def count(engine: Engine, table: type[SQLModel], decision_id: str) -> int:
    with session_scope(engine) as session:
        column = table.decision_id  # type: ignore[attr-defined]
        return session.exec(
            select(func.count()).select_from(table).where(column == decision_id)).one()


def review(decision_id: str, request_id: str = "r1", **overrides: Any) -> ReviewRow:
    data: dict[str, Any] = {
        "decision_id": decision_id, "request_id": request_id, "task_type": "refund_request",
        "reviewer": "alice", "verdict": "approve", "reason": "looks right",
        "model_confidence": 0.72, "zone": "queue", "risk": "medium",
        "reviewed_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    return ReviewRow(**{**data, **overrides})


def execution(decision_id: str, phase: str = "execute", **overrides: Any) -> ExecutionRow:
    data: dict[str, Any] = {
        "decision_id": decision_id, "phase": phase, "executor": "ledger",
        "action_type": "refund", "idempotency_key": f"{decision_id}:{phase}",
        "output": "Refund 12.50", "params_json": '{"amount": 12.5}',
    }
    return ExecutionRow(**{**data, **overrides})


def audit(decision_id: str, **overrides: Any) -> AuditRow:
    data: dict[str, Any] = {"decision_id": decision_id, "task_type": "content_moderation",
                            "risk": "high", "confidence": 0.97, "sampled": True,
                            "sample_rate": 0.2}
    return AuditRow(**{**data, **overrides})


def decision(decision_id: str, **overrides: Any) -> DecisionRecord:
    data: dict[str, Any] = {
        "decision_id": decision_id, "task_type": "refund_request", "zone": "queue",
        "risk": "medium", "status": "pending_review", "confidence": 0.72,
        "policy_version": "default-1+abcdef12", "requested_by": "svc",
        "request_json": '{"decision_id": "x"}', "state_json": "{}",
        "submitted_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    return DecisionRecord(**{**data, **overrides})


def test_record_review_is_idempotent_on_request_id(engine: Engine) -> None:
    decision_id = new_id()
    with session_scope(engine) as session:
        first, inserted = record_review(session=session, review=review(decision_id))
    assert inserted
    assert first.id is not None
    with session_scope(engine) as session:
        again, inserted = record_review(
            session=session, review=review(decision_id, reason="a retry with other text"))
    assert not inserted
    assert again.id == first.id
    assert again.reason == "looks right"
    with session_scope(engine) as session:
        other, inserted = record_review(
            session=session, review=review(decision_id, "r2", verdict="reject"))
    assert inserted
    with session_scope(engine) as session:
        rows = reviews_for(session=session, decision_id=decision_id)
    assert [(r.request_id, r.verdict) for r in rows] == [("r1", "approve"), ("r2", "reject")]
    assert rows[0].reviewed_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_same_request_id_on_another_decision_is_another_review(engine: Engine) -> None:
    one, two = new_id(), new_id()
    with session_scope(engine) as session:
        assert record_review(session=session, review=review(one))[1]
        assert record_review(session=session, review=review(two))[1]
    assert count(engine, ReviewRow, one) == count(engine, ReviewRow, two) == 1


def test_record_execution_is_idempotent_per_phase(engine: Engine) -> None:
    decision_id = new_id()
    with session_scope(engine) as session:
        first, inserted = record_execution(session=session, execution=execution(decision_id))
    assert inserted
    with session_scope(engine) as session:
        again, inserted = record_execution(
            session=session, execution=execution(decision_id, output="different"))
    assert not inserted
    assert (again.id, again.output) == (first.id, "Refund 12.50")
    with session_scope(engine) as session:
        confirm, inserted = record_execution(
            session=session, execution=execution(decision_id, "confirm"))
    assert inserted
    assert confirm.id != first.id
    with session_scope(engine) as session:
        rows = executions_for(session=session, decision_id=decision_id)
        assert [r.phase for r in rows] == ["execute", "confirm"]
        found = find_execution(session=session, decision_id=decision_id, phase="confirm")
        assert found is not None and found.id == confirm.id
        assert find_execution(session=session, decision_id=decision_id, phase="revision") is None


def test_record_audit_is_idempotent(engine: Engine) -> None:
    decision_id = new_id()
    with session_scope(engine) as session:
        assert record_audit(session=session, audit=audit(decision_id))[1]
    with session_scope(engine) as session:
        again, inserted = record_audit(session=session, audit=audit(decision_id, sampled=False))
    assert not inserted
    assert again.sampled is True
    assert count(engine, AuditRow, decision_id) == 1


def test_record_decision_upserts(engine: Engine) -> None:
    decision_id = new_id()
    with session_scope(engine) as session:
        record_decision(session=session, decision=decision(decision_id))
    finished = datetime(2026, 1, 2, 4, 0, tzinfo=UTC)
    with session_scope(engine) as session:
        saved = record_decision(session=session, decision=decision(
            decision_id, status="executed", finished_at=finished, state_json='{"v": 2}'))
    assert saved.status == "executed"
    with session_scope(engine) as session:
        row = session.get(DecisionRecord, decision_id)
    assert row is not None
    assert (row.status, row.state_json, row.finished_at) == ("executed", '{"v": 2}', finished)
    assert count(engine, DecisionRecord, decision_id) == 1


def test_datetimes_come_back_aware_utc(engine: Engine) -> None:
    decision_id = new_id()
    plus_two = datetime(2026, 3, 4, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    before = datetime.now(UTC)
    with session_scope(engine) as session:
        record_audit(session=session, audit=audit(decision_id, reviewed_at=plus_two))
    with session_scope(engine) as session:
        row = session.get(AuditRow, decision_id)
    assert row is not None and row.reviewed_at is not None
    assert row.reviewed_at == plus_two
    assert row.reviewed_at.utcoffset() == timedelta(0)
    assert row.created_at.utcoffset() == timedelta(0)
    assert before <= row.created_at <= datetime.now(UTC)


def test_naive_datetimes_are_refused(engine: Engine) -> None:
    decision_id = new_id()
    with session_scope(engine) as session, pytest.raises(StatementError, match="timezone"):
        record_review(session=session,
                      review=review(decision_id, reviewed_at=datetime(2026, 1, 2, 3, 4, 5)))
    assert count(engine, ReviewRow, decision_id) == 0


def test_concurrent_executions_write_one_row(engine: Engine) -> None:
    """Eight writers all finish the existence check before any inserts, so seven
    of them must take the IntegrityError path and return the winner's row."""
    decision_id = new_id()
    writers = 8
    checked = threading.Barrier(writers, timeout=20)
    local = threading.local()
    integrity_errors: list[str] = []

    def hold_first_check(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if (statement.lstrip().upper().startswith("SELECT") and "executions" in statement
                and not getattr(local, "checked", False)):
            local.checked = True
            checked.wait()

    def on_error(context: Any) -> None:
        if isinstance(context.sqlalchemy_exception, IntegrityError):
            integrity_errors.append(threading.current_thread().name)

    def write(_: int) -> tuple[int | None, bool]:
        with session_scope(engine) as session:
            row, inserted = record_execution(session=session, execution=execution(decision_id))
            return row.id, inserted

    event.listen(engine, "after_cursor_execute", hold_first_check)
    event.listen(engine, "handle_error", on_error)
    try:
        with ThreadPoolExecutor(max_workers=writers) as pool:
            results = list(pool.map(write, range(writers)))
    finally:
        event.remove(engine, "after_cursor_execute", hold_first_check)
        event.remove(engine, "handle_error", on_error)
    assert sum(inserted for _, inserted in results) == 1
    assert len({row_id for row_id, _ in results}) == 1
    assert len(integrity_errors) == writers - 1
    assert count(engine, ExecutionRow, decision_id) == 1
