"""The decision's full state: what the ``state`` query returns and the store keeps."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from hitl.cascade import JudgeResult, Routing, RulesResult
from hitl.content import Content
from hitl.enums import DecisionStatus, ExecutionPhase, LayerStatus, RiskLevel, Zone
from hitl.review import ReviewRecord


class Delivery(BaseModel):
    """One delivery of output to the action target."""

    phase: ExecutionPhase
    output: str | None
    at: datetime
    executor: str
    deduplicated: bool = False
    may_be_revised: bool = False


class Attempt(BaseModel):
    """One output the decision went through the cascade with, and what became of it."""

    number: int  # 0 the submitted output, N the Nth regeneration
    output: str
    confidence: float
    zone: Zone | None = None
    risk: RiskLevel | None = None
    judge: LayerStatus | None = None
    rule_failures: list[str] = Field(default_factory=list)
    blind_review: bool = False
    status: DecisionStatus
    verdicts: list[str] = Field(default_factory=list)  # "reject by bob: wrong label"


class DecisionState(BaseModel):
    decision_id: str
    task_type: str
    confidence: float
    reversible: bool
    status: DecisionStatus = DecisionStatus.SCREENING
    zone: Zone | None = None
    risk: RiskLevel | None = None
    policy_version: str | None = None
    rules: RulesResult | None = None
    judge: JudgeResult | None = None
    routing: Routing | None = None
    reviews: list[ReviewRecord] = Field(default_factory=list)
    approvals_required: int = 1
    approved_by: list[str] = Field(default_factory=list)
    deliveries: list[Delivery] = Field(default_factory=list)
    submitted_at: datetime
    escalated_at: datetime | None = None
    sla_deadline: datetime | None = None
    hard_deadline: datetime | None = None
    overdue: bool = False
    priority: int = 3
    audit_sampled: bool = False
    flagged_for_monitoring: bool = False
    final_output: str | None = None
    failure: str | None = None
    finished_at: datetime | None = None
    # Reject and regenerate: the output under review now, and every earlier one.
    attempt: int = 0
    attempts: list[Attempt] = Field(default_factory=list)
    outcome: str | None = None  # "rejected after 2 regenerations", a regeneration failure
    # Blind double review: verdicts hidden from status until all are in.
    blind_review: bool = False
    hidden_reviews: int = 0
    # Content binding: what is up for approval now (``edit`` when a reviewer edited the
    # model's ``proposal``; approvals in ``approved_by`` are of that content only), and
    # how many reviewer actions were refused (only the first few are in ``reviews``).
    proposal: Content | None = None
    edit: Content | None = None
    refused: int = 0

    @property
    def up_for_approval(self) -> Content | None:
        """The content an approval must name now: a reviewer's edit, else the proposal."""
        return self.edit or self.proposal


STATE_BUDGET = 1536 * 1024
"""Bytes a finished decision's state may take as JSON (Temporal refuses a payload over
2 MiB). The input limits keep the common paths far below it (``hitl.limits``); only a
long chain of regenerations with blind rejections gets near, and ``compacted`` keeps even
that under it."""


def compacted(state: DecisionState, budget: int = STATE_BUDGET) -> DecisionState:
    """``state`` for the record: the content up for approval dropped (the deliveries and
    attempts say what ran and what was proposed), and, if it is still over ``budget``,
    the outputs and correct answers of earlier attempts cut (the store's review rows and
    the history keep them whole)."""
    state.proposal = state.edit = None
    if len(state.model_dump_json()) <= budget:
        return state
    note = "[cut from the final state: see the store's reviews and the history]"
    for attempt in state.attempts[:-1]:
        attempt.output = note
    for review in state.reviews:
        if review.attempt < state.attempt and review.correct_answer is not None:
            review.correct_answer = note
    return state
