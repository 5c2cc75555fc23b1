"""Reviewer actions (signal and update payloads) and how they are recorded.

Every action carries its own ``request_id`` so the workflow can drop duplicates:
the server does not deduplicate signals, and a CLI retry or a double click must
not count twice.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from hitl.enums import DecisionStatus, ErrorCategory, Verdict
from hitl.request import Action, OutputText, ReasonText


class ReviewInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reviewer: str = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")
    reason: ReasonText = ""
    request_id: str | None = Field(default=None, min_length=1, max_length=200)
    time_on_page_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class ApproveInput(ReviewInput):
    """Approve as is, or with an edited output and/or action (edit-and-approve)."""

    output: OutputText | None = None
    action: Action | None = None
    flag_for_monitoring: bool = False


class RejectInput(ReviewInput):
    correct_answer: OutputText | None = None
    error_category: ErrorCategory = ErrorCategory.OTHER


class ReviewRecord(BaseModel):
    """One reviewer action as the workflow saw it, accepted or refused."""

    request_id: str
    reviewer: str
    verdict: Verdict
    reason: str = ""
    correct_answer: str | None = None
    error_category: ErrorCategory | None = None
    edited: bool = False
    flag_for_monitoring: bool = False
    received_at: datetime
    latency_seconds: float | None = None
    time_on_page_seconds: float | None = None
    accepted: bool = True
    refusal: str | None = None
    attempt: int = 0  # which output it judged: 0 the submitted one, N the Nth regeneration
    blind: bool = False  # one of a blind double review's independent verdicts


class ReviewAck(BaseModel):
    """The immediate answer to a reviewer update."""

    accepted: bool
    status: DecisionStatus
    message: str = ""
