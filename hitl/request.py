"""The request a service submits: one AI decision and what it would do.

Validation here is the first gate: a request that fails it never starts a
workflow, and the error names the field (``action.target_url``, ``confidence``).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

DecisionId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$",
        description="The caller's idempotency key; also the workflow ID.",
    ),
]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Action(BaseModel):
    """The side effect the decision would cause, executed at most once."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    params: dict[str, JsonValue] = Field(default_factory=dict)
    reversible: bool = Field(
        default=False,
        description="Only reversible outputs may be delivered provisionally on SLA expiry.",
    )
    target_url: str | None = Field(
        default=None, max_length=2000, description="HTTP executor target; ledger when unset."
    )

    @field_validator("target_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if (parts.scheme not in ("http", "https") or not (parts.hostname or "").strip()
                or any(char.isspace() for char in value)):
            raise ValueError("must be an http:// or https:// URL with a host")
        return value


MAX_REGENERATIONS = 3
"""Hard cap on regenerations per decision: each one costs a model call and a review."""


class Regenerate(BaseModel):
    """Where a rejected output goes for a new one: the service's regeneration endpoint.

    Per request rather than per task type in the policy: the service that
    submits the decision owns the model and its endpoint, and the policy stays
    the operators' file of risks and thresholds.
    """

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="POSTed the rejection feedback; answers "
                                                  "with a new output and confidence.")
    max_attempts: int = Field(default=1, ge=1, le=MAX_REGENERATIONS,
                              description="Regenerations allowed after human rejections.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return Action._http_url(value) or value


class Candidate(BaseModel):
    """An alternative outcome the model considered, with its score."""

    model_config = ConfigDict(extra="forbid")

    outcome: str = Field(min_length=1, max_length=500)
    score: Probability


class DecisionContext(BaseModel):
    """What the risk modifiers read, plus free-form extras shown to reviewers."""

    model_config = ConfigDict(extra="allow")

    amount: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    is_new_user: bool = False
    affects_multiple_users: bool = False
    requested_by: str | None = Field(default=None, max_length=200)

    @field_validator("amount", mode="before")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class DecisionRequest(BaseModel):
    """One AI decision submitted for routing."""

    model_config = ConfigDict(extra="forbid")

    decision_id: DecisionId
    task_type: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    action: Action
    output: str = Field(max_length=100_000, description="The model's response to deliver.")
    confidence: Probability
    outcome: str | None = Field(
        default=None,
        max_length=200,
        description="The proposed outcome label, for per-outcome thresholds.",
    )
    candidates: list[Candidate] = Field(default_factory=list, max_length=20)
    context: DecisionContext = Field(default_factory=DecisionContext)
    regenerate: Regenerate | None = Field(
        default=None, description="Regenerate a rejected output instead of ending rejected.")

    def payload_sha256(self) -> str:
        """A stable digest of the payload, to tell a resubmission from a conflict."""
        data = self.model_dump(mode="json")
        if data.get("regenerate") is None:  # digests from before the field stay valid
            data.pop("regenerate", None)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
