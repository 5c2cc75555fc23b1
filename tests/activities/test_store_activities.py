"""Store activities write what the tables should hold, and a retry writes nothing more."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import ActivityEnvironment

from activities.store import StoreActivities
from hitl.cascade import JudgeResult, Routing
from hitl.enums import DecisionStatus, ErrorCategory, LayerStatus, RiskLevel, Verdict, Zone
from hitl.payloads import RecordAuditInput, RecordDecisionInput, RecordReviewInput
from hitl.review import ReviewRecord
from hitl.state import DecisionState
from hitl.store import AuditRow, DecisionRecord, reviews_for, session_scope
from tests.factories import make_request

SUBMITTED = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)


def new_id() -> str:
    return f"d-{uuid.uuid4().hex[:16]}"


def review_input(decision_id: str, request_id: str = "req-1") -> RecordReviewInput:
    return RecordReviewInput(
        decision_id=decision_id, task_type="refund_request", confidence=0.72,
        zone="queue", risk="medium",
        review=ReviewRecord(
            request_id=request_id, reviewer="bob", verdict=Verdict.REJECT,
            reason="amount is wrong", correct_answer="Refund 10.00 EUR",
            error_category=ErrorCategory.WRONG_AMOUNT, edited=False, flag_for_monitoring=True,
            received_at=SUBMITTED, latency_seconds=42.5, time_on_page_seconds=12.0,
        ),
    )


def test_record_review(engine: Engine) -> None:
    activities = StoreActivities(engine=engine)
    decision_id = new_id()
    assert ActivityEnvironment().run(activities.record_review, review_input(decision_id)).inserted
    with session_scope(engine) as session:
        [row] = reviews_for(session=session, decision_id=decision_id)
    assert (row.request_id, row.task_type, row.reviewer, row.verdict) == (
        "req-1", "refund_request", "bob", "reject")
    assert (row.reason, row.correct_answer, row.error_category) == (
        "amount is wrong", "Refund 10.00 EUR", "wrong_amount")
    assert (row.accepted, row.refusal, row.edited, row.flag_for_monitoring) == (
        True, None, False, True)
    assert (row.model_confidence, row.zone, row.risk) == (0.72, "queue", "medium")
    assert (row.latency_seconds, row.time_on_page_seconds) == (42.5, 12.0)
    assert row.reviewed_at == SUBMITTED

    assert not ActivityEnvironment().run(activities.record_review,
                                         review_input(decision_id)).inserted
    assert ActivityEnvironment().run(activities.record_review,
                                     review_input(decision_id, "req-2")).inserted
    with session_scope(engine) as session:
        assert [r.request_id for r in reviews_for(session=session, decision_id=decision_id)] == [
            "req-1", "req-2"]


def test_record_audit(engine: Engine) -> None:
    activities = StoreActivities(engine=engine)
    data = RecordAuditInput(decision_id=new_id(), task_type="content_moderation",
                            risk=RiskLevel.HIGH, confidence=0.97, sampled=True, sample_rate=0.2)
    assert ActivityEnvironment().run(activities.record_audit, data).inserted
    assert not ActivityEnvironment().run(
        activities.record_audit, data.model_copy(update={"sampled": False})).inserted
    with session_scope(engine) as session:
        row = session.get(AuditRow, data.decision_id)
    assert row is not None
    assert (row.task_type, row.risk, row.confidence, row.sampled, row.sample_rate) == (
        "content_moderation", "high", 0.97, True, 0.2)
    assert (row.verdict, row.reviewer, row.reviewed_at) == (None, None, None)
    assert row.created_at.utcoffset() is not None


def test_record_decision(engine: Engine) -> None:
    activities = StoreActivities(engine=engine)
    request = make_request(task_type="refund_request", confidence=0.72,
                           context={"requested_by": "svc-billing"})
    state = DecisionState(
        decision_id=request.decision_id, task_type=request.task_type,
        confidence=request.confidence, reversible=True, status=DecisionStatus.PENDING_REVIEW,
        zone=Zone.QUEUE, risk=RiskLevel.MEDIUM, policy_version="default-1+0123abcd",
        judge=JudgeResult(status=LayerStatus.SKIPPED),
        routing=Routing(zone=Zone.QUEUE, reasons=["confidence 0.720 < 0.85"], sla_seconds=3600),
        submitted_at=SUBMITTED,
    )
    data = RecordDecisionInput(request=request, state=state)
    assert ActivityEnvironment().run(activities.record_decision, data).inserted
    assert not ActivityEnvironment().run(activities.record_decision, data).inserted  # upsert

    finished = datetime(2026, 5, 6, 8, 0, tzinfo=UTC)
    done = state.model_copy(update={"status": DecisionStatus.REJECTED, "finished_at": finished})
    ActivityEnvironment().run(activities.record_decision,
                              RecordDecisionInput(request=request, state=done))
    with session_scope(engine) as session:
        count = session.exec(select(func.count()).select_from(DecisionRecord).where(
            DecisionRecord.decision_id == request.decision_id)).one()
        row = session.get(DecisionRecord, request.decision_id)
    assert count == 1
    assert row is not None
    assert (row.task_type, row.zone, row.risk, row.status, row.confidence) == (
        "refund_request", "queue", "medium", "rejected", 0.72)
    assert (row.policy_version, row.requested_by) == ("default-1+0123abcd", "svc-billing")
    assert (row.submitted_at, row.finished_at) == (SUBMITTED, finished)
    assert type(request).model_validate_json(row.request_json) == request
    assert DecisionState.model_validate_json(row.state_json) == done
    assert json.loads(row.state_json)["status"] == "rejected"
