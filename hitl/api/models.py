"""Request and response bodies of the HTTP API (its OpenAPI schema).

Reviewer-action bodies have no ``reviewer`` field and forbid extra fields: the
reviewer is whoever the bearer token or session belongs to, so a body naming
someone else is a 422, never a review in their name.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hitl.enums import ErrorCategory, RiskLevel, Zone
from hitl.request import Action, DecisionRequest, OutputText, ReasonText
from hitl.state import DecisionState


class ReviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="The digest of the content you reviewed (`content.sha256` of the review "
                    "view). If the content up for approval has changed since, the answer is "
                    "409 and nothing is recorded: reload and look again.")
    reason: ReasonText = ""
    request_id: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$",
        description="Idempotency key chosen by the caller: a retry with the same key is "
                    "answered, not counted twice. Scoped to the authenticated reviewer.")
    time_on_page_seconds: float | None = Field(
        default=None, ge=0, le=86_400, allow_inf_nan=False,
        description="How long the reviewer looked at the decision before acting.")


class ApproveBody(ReviewBody):
    """Approve as proposed."""


class FlagBody(ReviewBody):
    """Let it through, but flag the decision for monitoring."""


class EditBody(ReviewBody):
    """Approve with an edited output and/or action (at least one)."""

    # The validator's rule, published so that clients (and schemathesis) know it.
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["output"], "properties": {"output": {"type": "string"}}},
        {"required": ["action"], "properties": {"action": {"type": "object"}}}]})

    output: OutputText | None = None
    action: Action | None = None
    flag_for_monitoring: bool = False

    @model_validator(mode="after")
    def _something_edited(self) -> EditBody:
        if self.output is None and self.action is None:
            raise ValueError("an edit needs an output or an action")
        return self


class RejectBody(ReviewBody):
    correct_answer: OutputText | None = None
    error_category: ErrorCategory = ErrorCategory.OTHER


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=500)


class SessionInfo(BaseModel):
    reviewer: str
    risks: list[RiskLevel]
    csrf_token: str = Field(description="Send as X-CSRF-Token on every POST and DELETE "
                                        "made with the session cookie.")
    expires_at: datetime


class Vocabulary(BaseModel):
    error_categories: list[ErrorCategory]
    zones: list[Zone]
    risks: list[RiskLevel]


class SimilarDecision(BaseModel):
    """A past decision of the same task type and what people said about it."""

    decision_id: str
    similarity: float = Field(description="token overlap (Jaccard) of the outputs, 0..1")
    confidence: float
    output: str
    status: str = Field(description="the past decision's final status")
    verdict: str = Field(description="the deciding human verdict: approve or reject")
    reviewers: list[str]
    reason: str = ""
    correct_answer: str | None = None
    error_category: str | None = None
    edited: bool = False
    reviewed_at: datetime


class ReviewContent(BaseModel):
    """The content up for approval now, and how it differs from the model's proposal."""

    sha256: str = Field(description="Name it in `content_sha256` to approve or reject it.")
    output: str
    action: Action
    edited_by: str | None = Field(description="The reviewer whose edit is up for approval; "
                                              "null when it is the model's proposal.")
    proposal_sha256: str
    diff: list[str] = Field(description="Unified diff of the edit against the proposal "
                                        "(output, then the action as JSON); empty if none.")
    risk: RiskLevel | None = None
    rule_failures: list[str] = Field(default_factory=list)


class ReviewView(BaseModel):
    """Everything the review page shows for one decision."""

    state: DecisionState
    request: DecisionRequest = Field(description="The request as submitted; after a "
                                                 "regeneration or an edit, `content` is what "
                                                 "is up for approval.")
    content: ReviewContent
    similar: list[SimilarDecision]


class Health(BaseModel):
    status: str = "ok"
