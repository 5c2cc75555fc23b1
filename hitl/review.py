"""Reviewer actions (signal and update payloads) and how they are recorded.

Every action carries its own ``request_id`` so the workflow can drop duplicates:
the server does not deduplicate signals, and a CLI retry or a double click must
not count twice. It names the content it judged (``content_sha256``, the digest
the review view showed), and carries a ``proof``: the reviewer's signature over
the whole action, which the workflow has verified before the action counts
(``hitl.proofs``).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from hitl.enums import DecisionStatus, ErrorCategory, RefusalCode, Verdict
from hitl.request import Action, OutputText, ReasonText


class VerdictProof(BaseModel):
    """A reviewer's Ed25519 signature over one action on one decision (``hitl.proofs``)."""

    model_config = ConfigDict(extra="forbid")

    key_id: str = Field(pattern=r"^[0-9a-f]{16}$",
                        description="Which of the reviewer's keys signed (rotation).")
    expires_at: datetime = Field(description="Refused after this instant (UTC).")
    signature: str = Field(pattern=r"^[A-Za-z0-9_-]{86}$", description="base64url, unpadded")


class ReviewInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reviewer: str = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")
    reason: ReasonText = ""
    request_id: str | None = Field(default=None, min_length=1, max_length=200)
    time_on_page_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    content_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="The digest of the content the reviewer was shown (output and action). "
                    "Refused as a conflict when the content up for approval has changed.")
    proof: VerdictProof | None = None


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
    # The content this verdict is about: for an edit, the edited content it approves,
    # with the content it was made from in ``edited_from_sha256``. None before binding.
    content_sha256: str | None = None
    edited_from_sha256: str | None = None
    refusal_code: RefusalCode | None = None
    proven: bool | None = None  # the proof verified (None: recorded before proofs)


class ReviewAck(BaseModel):
    """The immediate answer to a reviewer update."""

    accepted: bool
    status: DecisionStatus
    message: str = ""
    code: RefusalCode | None = None  # why it was refused, for callers to branch on
