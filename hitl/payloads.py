"""Activity inputs and results: one pydantic model in, one out, per activity."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, JsonValue

from hitl.enums import DecisionStatus, ErrorCategory, ExecutionPhase, RefusalCode, RiskLevel
from hitl.request import Action, Candidate, DecisionRequest, OutputText, Probability
from hitl.review import ApproveInput, RejectInput, ReviewRecord
from hitl.state import DecisionState


class JudgeInput(BaseModel):
    """What the judge sees: the untrusted material, never secrets."""

    decision_id: str
    task_type: str
    action_type: str
    action_params: dict[str, JsonValue] = Field(default_factory=dict)
    output: str
    confidence: float
    context: dict[str, JsonValue] = Field(default_factory=dict)


class RecordReviewInput(BaseModel):
    decision_id: str
    task_type: str
    confidence: float
    zone: str | None
    risk: str | None
    review: ReviewRecord


class ExecuteInput(BaseModel):
    decision_id: str
    phase: ExecutionPhase
    action: Action
    output: str | None
    may_be_revised: bool = False
    # The review that authorised this delivery, written before the ledger row.
    reviews: list[RecordReviewInput] = Field(default_factory=list)

    @property
    def idempotency_key(self) -> str:
        return f"{self.decision_id}:{self.phase.value}"


class ExecutionResult(BaseModel):
    decision_id: str
    phase: ExecutionPhase
    executor: str
    deduplicated: bool
    status_code: int | None = None
    executed_at: datetime


class RecordAuditInput(BaseModel):
    decision_id: str
    task_type: str
    risk: RiskLevel
    confidence: float
    sampled: bool
    sample_rate: float


class RecordDecisionInput(BaseModel):
    request: DecisionRequest
    state: DecisionState
    queue_version: int = 0


class QueueEntry(BaseModel):
    """A decision's row in the review queue table, as of ``version``."""

    decision_id: str
    task_type: str
    zone: str
    risk: str
    status: str
    confidence: float
    priority: int
    sla_deadline: datetime | None
    hard_deadline: datetime | None
    escalated_at: datetime | None
    waiting: bool
    summary: str
    version: int


class RegenerateInput(BaseModel):
    """The rejection feedback POSTed to a service's regeneration endpoint."""

    decision_id: str
    attempt: int = Field(ge=1, description="1 for the first regeneration")
    url: str
    task_type: str
    action: Action
    rejected_output: str
    confidence: float
    reason: str = ""
    error_category: ErrorCategory | None = None
    correct_answer: str | None = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.decision_id}:regen:{self.attempt}"


class RegenerateResult(BaseModel):
    """The service's new output: screened again from the top, like the first one."""

    output: OutputText
    confidence: Probability
    candidates: list[Candidate] = Field(default_factory=list, max_length=20)
    outcome: str | None = Field(default=None, max_length=200)


class AuthorizeInput(BaseModel):
    """Who sent a reviewer action, checked against the registry: the proof over the
    whole action (``approval`` or ``rejection``) for ``decision_id``, then the role."""

    reviewer: str
    risk: RiskLevel
    decision_id: str | None = None  # None only in histories recorded before proofs
    approval: ApproveInput | None = None
    rejection: RejectInput | None = None


class AuthorizeResult(BaseModel):
    allowed: bool
    reason: str | None = None
    code: RefusalCode | None = None
    reviewer: str | None = None  # the registered name the action is recorded under
    proven: bool = False  # a valid proof, or proofs switched off by the deployment
    risk: RiskLevel | None = None  # the risk the role was checked for


class RecordResult(BaseModel):
    inserted: bool


def queue_entry(state: DecisionState, *, summary: str, version: int) -> QueueEntry:
    """The queue row for ``state``: waiting while pending review or provisional."""
    return QueueEntry(
        decision_id=state.decision_id, task_type=state.task_type,
        zone=state.zone.value if state.zone else "", risk=state.risk.value if state.risk else "",
        status=state.status.value, confidence=state.confidence, priority=state.priority,
        sla_deadline=state.sla_deadline, hard_deadline=state.hard_deadline,
        escalated_at=state.escalated_at,
        waiting=state.status in (DecisionStatus.PENDING_REVIEW, DecisionStatus.PROVISIONAL)
        and state.finished_at is None,
        summary=summary[:500], version=version,
    )
