"""The review_queue table: newest version wins, most urgent first, filters and totals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from hitl.review_queue import ReviewQueueRow, upsert_entry, waiting_page

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def row(decision_id: str, *, priority: int = 3, sla_minutes: float = 60, version: int = 1,
        status: str = "pending_review", waiting: bool = True, zone: str = "queue",
        risk: str = "low", task_type: str = "ticket_classification") -> ReviewQueueRow:
    return ReviewQueueRow(
        decision_id=decision_id, task_type=task_type, zone=zone, risk=risk, status=status,
        confidence=0.5, priority=priority, sla_deadline=NOW + timedelta(minutes=sla_minutes),
        waiting=waiting, version=version, summary=f"summary {decision_id}")


def test_only_a_newer_version_replaces_a_row(engine: Engine) -> None:
    with Session(engine) as session:
        assert upsert_entry(session=session, entry=row("d1", version=2, priority=1))
        assert not upsert_entry(session=session, entry=row("d1", version=1, priority=3))
        assert not upsert_entry(session=session, entry=row("d1", version=2, waiting=False))
        assert upsert_entry(session=session, entry=row("d1", version=3, waiting=False))
        stored = session.get(ReviewQueueRow, "d1")
    assert stored is not None and stored.version == 3 and stored.waiting is False


def test_page_is_sorted_filtered_and_counted(engine: Engine) -> None:
    with Session(engine) as session:
        for entry in (row("batch-late", sla_minutes=90), row("batch-soon", sla_minutes=30),
                      row("urgent", priority=1, zone="escalate", risk="high", sla_minutes=5),
                      row("overdue", priority=0, zone="escalate", risk="critical",
                          sla_minutes=-10),
                      row("provisional", status="provisional", sla_minutes=-30),
                      row("done", waiting=False, priority=0)):
            upsert_entry(session=session, entry=entry)
        rows, total = waiting_page(session=session, now=NOW)
        assert [r.decision_id for r in rows] == [
            "overdue", "urgent", "provisional", "batch-soon", "batch-late"]
        assert total == 5
        rows, total = waiting_page(session=session, now=NOW, limit=2, offset=2)
        assert [r.decision_id for r in rows] == ["provisional", "batch-soon"] and total == 5
        rows, _ = waiting_page(session=session, now=NOW, overdue=True)
        assert [r.decision_id for r in rows] == ["overdue"]  # provisional is never overdue
        rows, total = waiting_page(session=session, now=NOW, overdue=False)
        assert "overdue" not in [r.decision_id for r in rows] and total == 4
        rows, total = waiting_page(session=session, now=NOW, zone="escalate", risk="high")
        assert [r.decision_id for r in rows] == ["urgent"] and total == 1
        rows, total = waiting_page(session=session, now=NOW, task_type="other")
        assert rows == [] and total == 0
