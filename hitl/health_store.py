"""Read the feedback store into ``hitl.health``'s plain records, for one time window.

Windows are half-open, ``since <= t < until`` (aware datetimes), on the time
each row describes: a decision's ``submitted_at``, a review's ``reviewed_at``,
an audit's ``created_at``, a review queue entry's ``escalated_at``. Decisions
reach ``decisions`` only when their workflow finishes; one still waiting for
review is in ``review_queue`` (and its reviews in ``reviews``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from hitl.errors import StoreError
from hitl.health import AuditFact, DecisionFact, QueueFact, ReviewFact, mark_decisive
from hitl.review_queue import ReviewQueueRow
from hitl.store import AuditRow, DecisionRecord, ReviewRow


@dataclass(frozen=True, slots=True)
class HealthData:
    since: datetime
    until: datetime
    decisions: list[DecisionFact] = field(default_factory=list)
    reviews: list[ReviewFact] = field(default_factory=list)
    audits: list[AuditFact] = field(default_factory=list)
    queue: list[QueueFact] = field(default_factory=list)

    def for_task_type(self, task_type: str) -> HealthData:
        return HealthData(self.since, self.until,
                          [d for d in self.decisions if d.task_type == task_type],
                          [r for r in self.reviews if r.task_type == task_type],
                          [a for a in self.audits if a.task_type == task_type],
                          [q for q in self.queue if q.task_type == task_type])

    @property
    def task_types(self) -> list[str]:
        return sorted({d.task_type for d in self.decisions} | {r.task_type for r in self.reviews}
                      | {a.task_type for a in self.audits} | {q.task_type for q in self.queue})


def load_health_data(*, session: Session, since: datetime, until: datetime,
                     task_type: str | None = None) -> HealthData:
    """Decisions, reviews, audits and review-gate entries of the window,
    optionally of one task type.

    Which review decided a decision needs the decision's whole review trail and
    how many approvals it required (from its recorded state), so the trails of
    every decision reviewed in the window are read, marked, then cut to the window.
    """
    # request_json is never needed here and can be large (sqlmodel types the column as str).
    skip_request = defer(DecisionRecord.request_json)  # type: ignore[arg-type]
    decisions = select(DecisionRecord).options(skip_request).where(
        DecisionRecord.submitted_at >= since, DecisionRecord.submitted_at < until)
    reviewed = select(ReviewRow.decision_id).where(
        ReviewRow.reviewed_at >= since, ReviewRow.reviewed_at < until)
    audits = select(AuditRow).where(AuditRow.created_at >= since, AuditRow.created_at < until)
    queue = select(ReviewQueueRow).where(col(ReviewQueueRow.escalated_at) >= since,
                                         col(ReviewQueueRow.escalated_at) < until)
    if task_type is not None:
        decisions = decisions.where(DecisionRecord.task_type == task_type)
        reviewed = reviewed.where(ReviewRow.task_type == task_type)
        audits = audits.where(AuditRow.task_type == task_type)
        queue = queue.where(ReviewQueueRow.task_type == task_type)

    trails: dict[str, list[ReviewRow]] = defaultdict(list)
    for row in session.exec(select(ReviewRow).where(col(ReviewRow.decision_id).in_(reviewed))
                            .order_by(col(ReviewRow.reviewed_at), col(ReviewRow.id))):
        trails[row.decision_id].append(row)
    required = {decision_id: _state(decision_id, state_json).get("approvals_required", 1)
                for decision_id, state_json in session.exec(
                    select(DecisionRecord.decision_id, DecisionRecord.state_json).where(
                        col(DecisionRecord.decision_id).in_(reviewed)))}
    reviews = [review
               for decision_id, rows in trails.items()
               for review in mark_decisive([_review(r) for r in rows], required.get(decision_id))
               if since <= review.reviewed_at < until]
    reviews.sort(key=lambda r: r.reviewed_at)
    return HealthData(
        since, until,
        [_decision(r) for r in session.exec(decisions.order_by(col(DecisionRecord.submitted_at)))],
        reviews,
        [AuditFact(a.decision_id, a.task_type, a.sampled, a.verdict, a.created_at)
         for a in session.exec(audits.order_by(col(AuditRow.created_at)))],
        [QueueFact(q.decision_id, q.task_type, q.escalated_at, q.waiting)
         for q in session.exec(queue.order_by(col(ReviewQueueRow.escalated_at)))
         if q.escalated_at is not None])


def _state(decision_id: str, state_json: str) -> dict[str, Any]:
    try:
        state = json.loads(state_json)
    except json.JSONDecodeError as exc:
        raise StoreError(f"decision {decision_id}: state_json is not JSON: {exc.msg}") from exc
    if not isinstance(state, dict):
        raise StoreError(f"decision {decision_id}: state_json is not an object")
    return state


def _decision(row: DecisionRecord) -> DecisionFact:
    judge = _state(row.decision_id, row.state_json).get("judge")
    called = isinstance(judge, dict) and judge.get("status") not in (None, "skipped")
    return DecisionFact(row.decision_id, row.task_type, row.zone, row.status, row.submitted_at,
                        judge_called=called)


def _review(row: ReviewRow) -> ReviewFact:
    return ReviewFact(
        decision_id=row.decision_id, task_type=row.task_type, reviewer=row.reviewer,
        verdict=row.verdict, reviewed_at=row.reviewed_at, accepted=row.accepted,
        refusal=row.refusal, edited=row.edited, correct_answer=row.correct_answer,
        error_category=row.error_category, latency_seconds=row.latency_seconds)
