"""The feedback loop's I/O: read labels from the store, propose, activate or reject a version.

Loading the labels, certifying and proposing are one activity on purpose: the
labels (thousands of rows) never enter workflow history, only the diff does.
Each step is idempotent: the proposed version is named after the workflow's
time and carries its content digest, so a retry proposes the same row, and
activating an active version (or rejecting a rejected one) changes nothing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from hitl import policy_versions as versions
from hitl.enums import RiskLevel
from hitl.errors import InputError
from hitl.health import ReviewFact, mark_decisive
from hitl.policy import Policy
from hitl.recalibration import (
    POLICY_CHANGE_TASK_TYPE,
    Label,
    PolicyDecisionInput,
    PolicyDecisionResult,
    Proposal,
    ProposeInput,
    bound_violations,
    gate_context,
    proposal_record,
    recalibrate,
    render_diff,
    version_name,
)
from hitl.store import AuditRow, DecisionRecord, ReviewRow, session_scope

POLICY_CONFLICT_TYPE = "PolicyVersionConflict"


def load_labels(*, session: Session, since: datetime, until: datetime) -> list[Label]:
    """Labels established in ``since <= t < until``: decisive reviews and audit verdicts.

    A reviewed decision is labeled by the review that decided it (an approval
    unchanged by every approver: correct; a reject or an edit: wrong), which
    needs its whole trail and the approvals it required (from its final record;
    a decision still waiting counts only once a reject decided it). The apply
    gate's own decisions are not model decisions and are left out.
    """
    reviewed = select(ReviewRow.decision_id).where(
        ReviewRow.reviewed_at >= since, ReviewRow.reviewed_at < until,
        ReviewRow.task_type != POLICY_CHANGE_TASK_TYPE)
    trails: dict[str, list[ReviewRow]] = defaultdict(list)
    for row in session.exec(select(ReviewRow).where(col(ReviewRow.decision_id).in_(reviewed))
                            .order_by(col(ReviewRow.reviewed_at), col(ReviewRow.id))):
        trails[row.decision_id].append(row)
    required = {decision_id: _approvals_required(state_json)
                for decision_id, state_json in session.exec(
                    select(DecisionRecord.decision_id, DecisionRecord.state_json).where(
                        col(DecisionRecord.decision_id).in_(reviewed)))}
    labels: list[Label] = []
    for decision_id, rows in trails.items():
        facts = mark_decisive([_fact(r) for r in rows], required.get(decision_id))
        for row, fact in zip(rows, facts, strict=True):
            if fact.decisive and since <= _aware(row.reviewed_at) < until and row.risk:
                labels.append(_label(row.model_confidence, fact.verdict == "approve"
                                     and not fact.outcome_edited, row.task_type, row.risk,
                                     "review"))
    audits = select(AuditRow).where(col(AuditRow.verdict).is_not(None),
                                    col(AuditRow.reviewed_at) >= since,
                                    col(AuditRow.reviewed_at) < until)
    labels += [_label(a.confidence, a.verdict == "approve", a.task_type, a.risk, "audit")
               for a in session.exec(audits.order_by(col(AuditRow.reviewed_at)))]
    return labels


class RecalibrationActivities:
    """Holds the store and the worker's policy file (what applies while no version is)."""

    def __init__(self, *, engine: Engine, policy: Policy) -> None:
        self._engine = engine
        self._file_policy = policy

    def _applied(self, session: Session) -> Policy:
        row = versions.active(session)
        return versions.policy_of(row) if row is not None else self._file_policy

    @activity.defn(name="propose_policy")
    def propose_policy(self, data: ProposeInput) -> Proposal:
        until = data.now
        since = until - timedelta(days=data.config.lookback_days)
        version = version_name(data.now)
        try:
            with session_scope(self._engine) as session:
                base = self._applied(session)
                labels = load_labels(session=session, since=since, until=until)
                result = recalibrate(labels, base, config=data.config, version=version,
                                     since=since, until=until)
                diff = result.diff
                activity.logger.info("recalibration computed", extra={
                    "base": base.full_version, "labels": diff.feedback.labels,
                    "reviews_used": diff.feedback.reviews_used, "changes": len(diff.changes)})
                if result.policy is None:
                    return Proposal(base_version=base.full_version, version=None, diff=diff)
                proposed = result.policy.full_version
                violations = bound_violations(diff, data.config.bounds)
                versions.propose(session, result.policy, source="recalibration",
                                 proposal=proposal_record(diff, violations=violations,
                                                          workflow_id=data.workflow_id))
        except InputError as exc:
            raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from exc
        return Proposal(base_version=base.full_version, version=proposed, diff=diff,
                        violations=violations,
                        text=render_diff(diff, proposed_version=proposed, violations=violations),
                        context=gate_context(diff, proposed_version=proposed))

    @activity.defn(name="activate_policy")
    def activate_policy(self, data: PolicyDecisionInput) -> PolicyDecisionResult:
        """Activate, unless another version became active since the proposal was
        computed: applying it then would silently undo that change, so it is
        rejected as superseded instead (status ``rejected``)."""
        try:
            with session_scope(self._engine) as session:
                row = versions.get(session, data.version)
                if row is not None and row.status == versions.PolicyVersionStatus.ACTIVE.value:
                    return _result(row)
                applied = self._applied(session).full_version
                if applied != data.base_version:
                    note = (f"superseded: {applied} became active while this proposal "
                            f"(based on {data.base_version}) waited")
                    return _result(versions.reject(session, data.version, by=data.by,
                                                   note=note))
                return _result(versions.activate(session, data.version, by=data.by,
                                                 note=data.note))
        except InputError as exc:
            raise ApplicationError(str(exc), type=POLICY_CONFLICT_TYPE,
                                   non_retryable=True) from exc

    @activity.defn(name="reject_policy")
    def reject_policy(self, data: PolicyDecisionInput) -> PolicyDecisionResult:
        try:
            with session_scope(self._engine) as session:
                return _result(versions.reject(session, data.version, by=data.by,
                                               note=data.note))
        except InputError as exc:
            raise ApplicationError(str(exc), type=POLICY_CONFLICT_TYPE,
                                   non_retryable=True) from exc


def _result(row: versions.PolicyVersionRow) -> PolicyDecisionResult:
    return PolicyDecisionResult(version=row.version, status=row.status, note=row.note)


def _approvals_required(state_json: str) -> int | None:
    try:
        state = json.loads(state_json)
    except ValueError:
        return None
    value = state.get("approvals_required") if isinstance(state, dict) else None
    return value if isinstance(value, int) else None


def _fact(row: ReviewRow) -> ReviewFact:
    return ReviewFact(decision_id=row.decision_id, task_type=row.task_type,
                      reviewer=row.reviewer, verdict=row.verdict, reviewed_at=row.reviewed_at,
                      accepted=row.accepted, refusal=row.refusal, edited=row.edited)


def _label(confidence: float, correct: bool, task_type: str, risk: str,
           source: Literal["review", "audit"]) -> Label:
    return Label(confidence=confidence, correct=correct, task_type=task_type,
                 risk=RiskLevel(risk), source=source)


def _aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; the store writes UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
