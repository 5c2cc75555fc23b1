"""Reviewed decisions as a training/evaluation set: one ``ExportRow`` per decision.

A decision is exported when a person reached a verdict on it: a deciding review
at the gate (see ``hitl.health.mark_decisive``: the first accepted reject, or
the approval that completed the required approvals) or an auditor's verdict on
a sampled AUTO_AUDIT decision. Decisions reach the ``decisions`` table only
when their workflow finishes, so one still waiting (or provisional until its
hard deadline) is not exported yet.

The ``label`` follows ``hitl.health.model_agreement``: the model was right when
its output was approved unchanged; an edit or a reject means it was wrong, and
the edit or the reviewer's correct answer is the corrected output.

Nothing secret leaves: context and action parameters lose every key that names
a credential (``password``, ``api_key``, ``access_token``, ``authorization``,
...), values shaped like one (``Bearer ...``, ``sk-...``, hitl reviewer tokens)
are dropped, and URLs lose their user info.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, JsonValue, ValidationError
from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from hitl.enums import ExecutionPhase
from hitl.errors import StoreError
from hitl.health import ReviewFact, mark_decisive
from hitl.request import DecisionRequest
from hitl.reviewers import TOKEN_PREFIX
from hitl.state import DecisionState
from hitl.store import AuditRow, DecisionRecord, ExecutionRow, ReviewRow

PAGE_SIZE = 500
"""Decisions read per query: memory stays bounded whatever the store holds."""

_SECRET_KEY = re.compile(
    r"(^|_)(password|passwd|pwd|passphrase|secret|token|api_?key|auth|authorization|"
    r"credential|private_?key|cookie|session_?id|ssn|cvv|pin|dsn|connection_?string|"
    r"database_?url|webhook(_?url)?|signature|sig|access_?key)s?(_|$)")
# Credential shapes: auth headers, OpenAI/hitl/GitHub/Slack tokens, AWS key IDs, JWTs.
_SECRET_VALUE = re.compile(rf"^\s*(bearer\s+\S|basic\s+\S|sk-[A-Za-z0-9_-]{{16,}}|"
                           rf"{re.escape(TOKEN_PREFIX)}[A-Za-z0-9_-]{{20,}}|"
                           r"gh[pousr]_[A-Za-z0-9]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|"
                           r"AKIA[0-9A-Z]{16}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.)",
                           re.IGNORECASE)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_DELIVERING = (ExecutionPhase.EXECUTE.value, ExecutionPhase.REVISION.value)


# ------------------------------------------------------------------- models

class ExportedAction(BaseModel):
    type: str
    params: dict[str, JsonValue]
    reversible: bool | None = None
    target_url: str | None = None


class ExportedRequest(BaseModel):
    """What the model produced and saw, secrets removed."""

    output: str
    confidence: float
    outcome: str | None
    candidates: list[dict[str, JsonValue]]
    action: ExportedAction
    context: dict[str, JsonValue]


class ExportedRouting(BaseModel):
    zone: str | None
    risk: str | None
    policy_version: str | None
    threshold: float | None = None
    threshold_source: str | None = None
    risk_reasons: list[str] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    rules_failed: list[str] = Field(default_factory=list)
    judge_status: str | None = None
    judge_score: float | None = None


class ExportedVerdict(BaseModel):
    """One human verdict: a reviewer's at the gate (refused ones too) or an auditor's."""

    source: str = Field(description="review (at the gate) or audit (after the fact)")
    reviewer: str | None
    verdict: str
    accepted: bool
    decisive: bool = Field(description="the verdict that decided the decision")
    refusal: str | None = None
    reason: str = ""
    error_category: str | None = None
    correct_answer: str | None = None
    edited: bool = False
    flag_for_monitoring: bool = False
    reviewed_at: datetime | None
    latency_seconds: float | None = None
    time_on_page_seconds: float | None = None


class ExportedOutcome(BaseModel):
    status: str
    final_output: str | None
    flagged_for_monitoring: bool
    failure: str | None
    finished_at: datetime | None


class ExportLabel(BaseModel):
    """The supervision signal. ``target_output`` is what the model should have
    said: its own output when it was right, the correction when one was given,
    None when a reviewer rejected without saying what was right."""

    model_correct: bool
    source: str
    verdict: str
    error_category: str | None
    corrected_output: str | None
    corrected_action: ExportedAction | None
    target_output: str | None


class ExportRow(BaseModel):
    decision_id: str
    task_type: str
    submitted_at: datetime
    request: ExportedRequest
    routing: ExportedRouting
    verdicts: list[ExportedVerdict]
    outcome: ExportedOutcome
    label: ExportLabel


# ---------------------------------------------------------------- redaction

def is_secret_key(key: str) -> bool:
    """Whether a context or parameter key names a credential (``apiKey``, ``db_password``)."""
    return bool(_SECRET_KEY.search(_CAMEL.sub("_", key).lower().replace("-", "_")))


def redact(value: Any) -> Any:
    """``value`` without secret-named keys or secret-shaped strings, recursively;
    URLs lose user info (``https://user:pw@host`` becomes ``https://host``)."""
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()
                if not is_secret_key(str(k)) and not _secret_string(v)}
    if isinstance(value, list):
        return [redact(v) for v in value if not _secret_string(v)]
    if isinstance(value, str):
        return _strip_userinfo(value)
    return value


def _secret_string(value: Any) -> bool:
    return isinstance(value, str) and bool(_SECRET_VALUE.match(value))


def _strip_userinfo(text: str) -> str:
    """A URL of any scheme without user info (``postgresql://app:pw@db`` too) and
    without query parameters named like credentials (``?token=``, ``?sig=``)."""
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if not parts.scheme or not parts.netloc:
        return text
    host = parts.netloc.rsplit("@", 1)[1] if "@" in parts.netloc else parts.netloc
    query = "&".join(pair for pair in parts.query.split("&")
                     if pair and not is_secret_key(pair.split("=", 1)[0]))
    if host == parts.netloc and query == parts.query:
        return text
    return urlunsplit((parts.scheme, host, parts.path, query, parts.fragment))


# -------------------------------------------------------------------- rows

def build_row(*, record: DecisionRecord, reviews: Sequence[ReviewRow],
              audit: AuditRow | None = None,
              executions: Sequence[ExecutionRow] = ()) -> ExportRow | None:
    """The export row of one finished decision, or None if no person reached a verdict.

    ``reviews`` in the order received; ``executions`` from the ledger (only
    needed to tell an edited action).

    Raises:
        StoreError: the record's request or state does not parse.
    """
    request, state = _parse(record)
    facts = mark_decisive([_fact(r) for r in reviews], state.approvals_required)
    verdicts = [_verdict(row, fact.decisive) for row, fact in zip(reviews, facts, strict=True)]
    audited = audit is not None and audit.verdict is not None
    if audit is not None and audited:
        verdicts.append(ExportedVerdict(
            source="audit", reviewer=audit.reviewer, verdict=audit.verdict or "", accepted=True,
            decisive=not any(f.decisive for f in facts), error_category=audit.error_category,
            reviewed_at=audit.reviewed_at))
    decisive = next((f for f in facts if f.decisive), None)
    if decisive is not None:
        label = _review_label(request, state, decisive, executions)
    elif audit is not None and audited:
        correct = audit.verdict == "approve"
        label = ExportLabel(model_correct=correct, source="audit", verdict=audit.verdict or "",
                            error_category=audit.error_category, corrected_output=None,
                            corrected_action=None,
                            target_output=request.output if correct else None)
    else:
        return None
    return ExportRow(
        decision_id=record.decision_id, task_type=record.task_type,
        submitted_at=record.submitted_at, request=_request(request),
        routing=_routing(record, state), verdicts=verdicts,
        outcome=ExportedOutcome(status=record.status, final_output=state.final_output,
                                flagged_for_monitoring=state.flagged_for_monitoring,
                                failure=state.failure, finished_at=record.finished_at),
        label=label)


def _parse(record: DecisionRecord) -> tuple[DecisionRequest, DecisionState]:
    try:
        return (DecisionRequest.model_validate_json(record.request_json),
                DecisionState.model_validate_json(record.state_json))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise StoreError(f"decision {record.decision_id}: stored record does not parse: "
                         f"{where}: {first['msg']}") from None


def _fact(row: ReviewRow) -> ReviewFact:
    return ReviewFact(decision_id=row.decision_id, task_type=row.task_type,
                      reviewer=row.reviewer, verdict=row.verdict, reviewed_at=row.reviewed_at,
                      accepted=row.accepted, refusal=row.refusal, edited=row.edited,
                      correct_answer=row.correct_answer, error_category=row.error_category,
                      latency_seconds=row.latency_seconds)


def _verdict(row: ReviewRow, decisive: bool) -> ExportedVerdict:
    return ExportedVerdict(
        source="review", reviewer=row.reviewer, verdict=row.verdict, accepted=row.accepted,
        decisive=decisive, refusal=row.refusal, reason=row.reason,
        error_category=row.error_category, correct_answer=row.correct_answer,
        edited=row.edited, flag_for_monitoring=row.flag_for_monitoring,
        reviewed_at=row.reviewed_at, latency_seconds=row.latency_seconds,
        time_on_page_seconds=row.time_on_page_seconds)


def _review_label(request: DecisionRequest, state: DecisionState, decisive: ReviewFact,
                  executions: Sequence[ExecutionRow]) -> ExportLabel:
    if decisive.verdict == "reject":
        corrected = (decisive.correct_answer or "").strip() or None
        return ExportLabel(model_correct=False, source="review", verdict="reject",
                           error_category=decisive.error_category, corrected_output=corrected,
                           corrected_action=None, target_output=corrected)
    if not decisive.outcome_edited:
        return ExportLabel(model_correct=True, source="review", verdict="approve",
                           error_category=None, corrected_output=None, corrected_action=None,
                           target_output=request.output)
    # The edit itself is not in the review row: what was delivered after it is.
    output = state.final_output if state.final_output is not None else request.output
    action = _delivered_action(request, executions)
    return ExportLabel(model_correct=False, source="review", verdict="approve",
                       error_category=decisive.error_category,
                       corrected_output=output if output != request.output else None,
                       corrected_action=action, target_output=output)


def _delivered_action(request: DecisionRequest,
                      executions: Sequence[ExecutionRow]) -> ExportedAction | None:
    """The action the approval ran, if the edit changed it (from the executor's ledger)."""
    delivered = [e for e in executions if e.phase in _DELIVERING]
    if not delivered:
        return None
    last = delivered[-1]
    params = json.loads(last.params_json or "{}")
    if last.action_type == request.action.type and params == request.action.params:
        return None
    return ExportedAction(type=last.action_type, params=redact(params),
                          target_url=_strip_userinfo(last.target_url) if last.target_url
                          else None)


def _request(request: DecisionRequest) -> ExportedRequest:
    action = request.action
    return ExportedRequest(
        output=request.output, confidence=request.confidence, outcome=request.outcome,
        candidates=[c.model_dump(mode="json") for c in request.candidates],
        action=ExportedAction(type=action.type, params=redact(action.params),
                              reversible=action.reversible,
                              target_url=_strip_userinfo(action.target_url)
                              if action.target_url else None),
        context=redact(request.context.model_dump(mode="json")))


def _routing(record: DecisionRecord, state: DecisionState) -> ExportedRouting:
    assessment = state.rules.assessment if state.rules else None
    return ExportedRouting(
        zone=record.zone, risk=record.risk, policy_version=record.policy_version,
        threshold=assessment.threshold if assessment else None,
        threshold_source=assessment.threshold_source if assessment else None,
        risk_reasons=assessment.risk_reasons if assessment else [],
        reasons=state.routing.reasons if state.routing else [],
        rules_failed=[f.rule for f in state.rules.findings if not f.passed] if state.rules else [],
        judge_status=state.judge.status.value if state.judge else None,
        judge_score=state.judge.score if state.judge else None)


# ------------------------------------------------------------------- query

def reviewed_decisions(*, session: Session, since: datetime | None = None,
                       until: datetime | None = None, task_type: str | None = None,
                       page_size: int = PAGE_SIZE) -> Iterator[ExportRow]:
    """Export rows of the finished, human-judged decisions submitted in
    ``[since, until)``, oldest first (then by ID).

    Streams: pages of ``page_size`` decisions by keyset on (submitted_at,
    decision_id), each page's reviews, audits and executions in one query each.
    """
    # Correlated EXISTS, so the planner walks the submission-time index and looks each
    # decision up; "IN (every reviewed ID)" read the whole reviews and audits tables.
    judged = or_(
        select(ReviewRow.id).where(ReviewRow.decision_id == DecisionRecord.decision_id)
        .exists(),
        select(AuditRow.decision_id).where(AuditRow.decision_id == DecisionRecord.decision_id,
                                           col(AuditRow.verdict).is_not(None)).exists())
    base = select(DecisionRecord).where(judged)
    if since is not None:
        base = base.where(col(DecisionRecord.submitted_at) >= since)
    if until is not None:
        base = base.where(col(DecisionRecord.submitted_at) < until)
    if task_type is not None:
        base = base.where(DecisionRecord.task_type == task_type)
    order = (col(DecisionRecord.submitted_at), col(DecisionRecord.decision_id))
    after: tuple[datetime, str] | None = None
    while True:
        query = base
        if after is not None:
            at, decision_id = after
            query = query.where(or_(col(DecisionRecord.submitted_at) > at, and_(
                col(DecisionRecord.submitted_at) == at,
                col(DecisionRecord.decision_id) > decision_id)))
        records = list(session.exec(query.order_by(*order).limit(page_size)))
        if not records:
            return
        ids = [r.decision_id for r in records]
        reviews: dict[str, list[ReviewRow]] = defaultdict(list)
        for review in session.exec(select(ReviewRow).where(col(ReviewRow.decision_id).in_(ids))
                                   .order_by(col(ReviewRow.reviewed_at), col(ReviewRow.id))):
            reviews[review.decision_id].append(review)
        audits = {a.decision_id: a for a in session.exec(
            select(AuditRow).where(col(AuditRow.decision_id).in_(ids)))}
        executions: dict[str, list[ExecutionRow]] = defaultdict(list)
        for execution in session.exec(select(ExecutionRow).where(
                col(ExecutionRow.decision_id).in_(ids)).order_by(col(ExecutionRow.id))):
            executions[execution.decision_id].append(execution)
        for record in records:
            row = build_row(record=record, reviews=reviews[record.decision_id],
                            audit=audits.get(record.decision_id),
                            executions=executions[record.decision_id])
            if row is not None:
                yield row
        after = (records[-1].submitted_at, records[-1].decision_id)
        session.expunge_all()  # the identity map would otherwise hold every row read
