"""Feedback-store writes as activities: sync, on the worker's thread pool.

Each write is idempotent on its natural key, so Temporal's retries (after a
locked SQLite file, a refused PostgreSQL connection, a worker crash) never
duplicate a review, an audit or a decision record.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from temporalio import activity

from hitl.payloads import (
    QueueEntry,
    RecordAuditInput,
    RecordDecisionInput,
    RecordResult,
    RecordReviewInput,
    queue_entry,
)
from hitl.review_queue import ReviewQueueRow, upsert_entry
from hitl.store import (
    AuditRow,
    DecisionRecord,
    ReviewRow,
    record_audit,
    record_decision,
    record_review,
    session_scope,
)
from hitl.summaries import summary_for


class StoreActivities:
    def __init__(self, *, engine: Engine) -> None:
        self._engine = engine

    @activity.defn(name="record_review")
    def record_review(self, data: RecordReviewInput) -> RecordResult:
        with session_scope(self._engine) as session:
            _, inserted = record_review(session=session, review=review_row(data))
        return RecordResult(inserted=inserted)

    @activity.defn(name="record_audit")
    def record_audit(self, data: RecordAuditInput) -> RecordResult:
        row = AuditRow(
            decision_id=data.decision_id, task_type=data.task_type, risk=data.risk.value,
            confidence=data.confidence, sampled=data.sampled, sample_rate=data.sample_rate,
        )
        with session_scope(self._engine) as session:
            _, inserted = record_audit(session=session, audit=row)
        return RecordResult(inserted=inserted)

    @activity.defn(name="record_decision")
    def record_decision(self, data: RecordDecisionInput) -> RecordResult:
        state = data.state
        row = DecisionRecord(
            decision_id=state.decision_id, task_type=state.task_type,
            zone=state.zone.value if state.zone else None,
            risk=state.risk.value if state.risk else None, status=state.status.value,
            confidence=state.confidence, policy_version=state.policy_version,
            requested_by=data.request.context.requested_by,
            request_json=data.request.model_dump_json(), state_json=state.model_dump_json(),
            submitted_at=state.submitted_at,
            finished_at=state.finished_at,
        )
        with session_scope(self._engine) as session:
            # The identity map makes record_decision's own lookup free after this one.
            inserted = session.get(DecisionRecord, row.decision_id) is None
            record_decision(session=session, decision=row, commit=False)
            if state.zone is not None and state.zone.needs_review:
                # Leaves the review queue in the same transaction: no extra round trip,
                # and never a finished decision still listed as waiting.
                entry = queue_entry(state, summary=summary_for(data.request),
                                    version=data.queue_version)
                upsert_entry(session=session, entry=_queue_row(entry), commit=False)
            session.commit()
        return RecordResult(inserted=inserted)

    @activity.defn(name="update_queue")
    def update_queue(self, data: QueueEntry) -> RecordResult:
        with session_scope(self._engine) as session:
            written = upsert_entry(session=session, entry=_queue_row(data))
        return RecordResult(inserted=written)


def review_row(data: RecordReviewInput) -> ReviewRow:
    """The feedback-store row of a review (also written by the executor, for the
    review that authorised its delivery)."""
    review = data.review
    return ReviewRow(
        decision_id=data.decision_id, request_id=review.request_id, task_type=data.task_type,
        reviewer=review.reviewer, verdict=review.verdict.value, accepted=review.accepted,
        refusal=review.refusal, reason=review.reason, correct_answer=review.correct_answer,
        error_category=review.error_category.value if review.error_category else None,
        edited=review.edited, flag_for_monitoring=review.flag_for_monitoring,
        model_confidence=data.confidence, zone=data.zone, risk=data.risk,
        latency_seconds=review.latency_seconds,
        time_on_page_seconds=review.time_on_page_seconds,
        reviewed_at=review.received_at,
    )


def _queue_row(entry: QueueEntry) -> ReviewQueueRow:
    return ReviewQueueRow(**entry.model_dump())
