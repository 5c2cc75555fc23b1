"""The review queue as a store table the workflow keeps current.

Measured (README, "Reviewing"): listing the queue from Temporal visibility costs
about 0.5-0.75 ms per pending decision because the dev server's visibility
cannot sort on custom attributes, so a page at 10,000 pending takes seconds; an
indexed table answers in well under a millisecond. The workflow writes a row on
entering the gate, when the SLA passes, and (with the final record) when it
leaves the queue. Each write carries the workflow's version counter and only a
newer version replaces a row, so a retried old write never undoes a newer one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Index, func
from sqlmodel import Field, Session, SQLModel, col, select

from hitl.client import QueueItem
from hitl.enums import DecisionStatus
from hitl.store import utcnow


class ReviewQueueRow(SQLModel, table=True):
    __tablename__ = "review_queue"
    __table_args__ = (
        Index("ix_review_queue_order", "waiting", "priority", "sla_deadline"),
        Index("ix_review_queue_zone_order", "zone", "waiting", "priority", "sla_deadline"),
        Index("ix_review_queue_risk_order", "risk", "waiting", "priority", "sla_deadline"),
        Index("ix_review_queue_task_order", "task_type", "waiting", "priority", "sla_deadline"),
        Index("ix_review_queue_escalated_at", "escalated_at"),  # metrics windows
    )

    decision_id: str = Field(primary_key=True, max_length=200)
    task_type: str = Field(max_length=64)
    zone: str = Field(max_length=20)
    risk: str = Field(max_length=20)
    status: str = Field(max_length=20)
    confidence: float
    priority: int
    sla_deadline: datetime | None = None
    hard_deadline: datetime | None = None
    escalated_at: datetime | None = None
    waiting: bool
    summary: str = Field(default="", max_length=500)
    version: int
    updated_at: datetime = Field(default_factory=utcnow)


def upsert_entry(*, session: Session, entry: ReviewQueueRow, commit: bool = True) -> bool:
    """Write ``entry`` unless a row with the same or a newer version exists.

    ``commit=False`` leaves committing (of this and earlier writes) to the caller.
    """
    existing = session.get(ReviewQueueRow, entry.decision_id)
    if existing is not None and existing.version >= entry.version:
        return False
    if existing is None:
        session.add(entry)
    else:
        for name, value in entry.model_dump().items():
            setattr(existing, name, value)
    if commit:
        session.commit()
    return True


def waiting_page(*, session: Session, now: datetime, zone: str | None = None,
                 risk: str | None = None, task_type: str | None = None,
                 overdue: bool | None = None, limit: int = 50,
                 offset: int = 0) -> tuple[list[ReviewQueueRow], int]:
    """One page of waiting decisions, most urgent first, and the total matching.

    Urgency is priority (0 overdue, 1 escalated, 3 batch), then the SLA deadline.
    Overdue means pending review (not provisional) past its SLA deadline.
    """
    where: list[ColumnElement[bool]] = [col(ReviewQueueRow.waiting).is_(True)]
    for column, value in ((ReviewQueueRow.zone, zone), (ReviewQueueRow.risk, risk),
                          (ReviewQueueRow.task_type, task_type)):
        if value is not None:
            where.append(col(column) == value)
    is_overdue = ((col(ReviewQueueRow.status) == DecisionStatus.PENDING_REVIEW.value)
                  & (col(ReviewQueueRow.sla_deadline) < now))
    if overdue is True:
        where.append(is_overdue)
    elif overdue is False:
        where.append(~is_overdue)
    rows = session.exec(
        select(ReviewQueueRow).where(*where)
        .order_by(col(ReviewQueueRow.priority), col(ReviewQueueRow.sla_deadline))
        .offset(offset).limit(limit)).all()
    total = session.exec(select(func.count()).select_from(ReviewQueueRow).where(*where)).one()
    return list(rows), int(total)


def as_queue_item(row: ReviewQueueRow, now: datetime) -> QueueItem:
    """A table row as the queue item the API and the CLI list."""
    return QueueItem(
        decision_id=row.decision_id, task_type=row.task_type, status=row.status,
        zone=row.zone, risk=row.risk, confidence=row.confidence, priority=row.priority,
        sla_deadline=row.sla_deadline, summary=row.summary,
        overdue=(row.sla_deadline is not None and row.sla_deadline < now
                 and row.status == DecisionStatus.PENDING_REVIEW.value),
    )
