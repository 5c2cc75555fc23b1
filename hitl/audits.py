"""After-the-fact review of AUTO_AUDIT decisions: the sample that estimates error escape.

An audited decision has already run; the auditor's verdict does not undo it (a
rejection is the signal to compensate and recalibrate). Verdicts are written
once: a second audit of the same decision is refused rather than overwriting
the first, so the escape-rate estimate cannot be edited after the fact.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from hitl.enums import ErrorCategory, RiskLevel, Verdict
from hitl.errors import InputError, ReviewRefused
from hitl.reviewers import get_reviewer
from hitl.store import AuditRow, utcnow


def pending_audits(*, session: Session, limit: int = 100) -> list[AuditRow]:
    """Sampled audits still waiting for a verdict, oldest first."""
    return list(session.exec(
        select(AuditRow).where(col(AuditRow.sampled).is_(True), col(AuditRow.verdict).is_(None))
        .order_by(col(AuditRow.created_at)).limit(limit)).all())


def record_audit_verdict(*, session: Session, decision_id: str, reviewer: str,
                         verdict: Verdict, error_category: ErrorCategory | None) -> AuditRow:
    """Record an auditor's verdict on a sampled decision.

    Raises:
        InputError: no audit for ``decision_id``, or a reject without a category.
        ReviewRefused: unknown/disabled reviewer, a role below the decision's risk,
            or the audit already has a verdict.
    """
    audit = session.get(AuditRow, decision_id)
    if audit is None:
        raise InputError(f"decision_id: no audit record for {decision_id}", field="decision_id")
    auditor = get_reviewer(session=session, name=reviewer)
    if auditor is None or not auditor.active:
        raise ReviewRefused(f"unknown or disabled reviewer {reviewer!r}", field="reviewer")
    if not auditor.may_decide(RiskLevel(audit.risk)):
        raise ReviewRefused(f"reviewer {reviewer!r} may not decide {audit.risk}-risk decisions",
                            field="reviewer")
    if audit.verdict is not None:
        raise ReviewRefused(f"audit of {decision_id} already has a verdict ({audit.verdict} by "
                            f"{audit.reviewer})", field="decision_id")
    if verdict is Verdict.REJECT and error_category is None:
        raise InputError("error_category: a rejected audit needs an error category",
                         field="error_category")
    audit.verdict, audit.reviewer = verdict.value, reviewer
    audit.error_category = error_category.value if error_category else None
    audit.reviewed_at = utcnow()
    session.add(audit)
    session.commit()
    session.refresh(audit)
    return audit
