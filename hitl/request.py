"""The request a service submits: one AI decision and what it would do.

Validation here is the first gate: a request that fails it never starts a
workflow, and the error names the field (``action.target_url``, ``confidence``).
Sizes are bounded in bytes as stored (``hitl.limits`` keeps the numbers and the
budget they hold), and free-form JSON must be finite: pydantic would write NaN and
Infinity as ``null``, silently changing what a reviewer approved.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticSerializationError, to_json

from hitl.limits import (
    MAX_CONTEXT_BYTES,
    MAX_JSON_DEPTH,
    MAX_OUTPUT_BYTES,
    MAX_PARAMS_BYTES,
    MAX_REASON_BYTES,
)

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


def stored_size(value: object) -> int:
    """Bytes of ``value`` as compact JSON: what a Temporal payload holds of it."""
    try:
        return len(to_json(value))
    except PydanticSerializationError:  # a str from bytes decoded with surrogateescape
        raise ValueError("must be valid Unicode text (it holds an unpaired surrogate)"
                         ) from None


STORED = {"stored": True}
"""Validation context for values read back from Temporal (``hitl.codec``): they were
checked against the limits when they came in, and a decision accepted under earlier,
looser limits must still replay, so the byte, depth and finiteness checks are skipped.
New reviewer actions arriving through Temporal are held to the limits by the workflow
(``hitl.approvals``), which calls ``over_limits``."""


def _stored(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and info.context.get("stored") is True


def _at_most(limit: int) -> Callable[[str, ValidationInfo], str]:
    def check(value: str, info: ValidationInfo) -> str:
        if _stored(info):
            return value
        size = stored_size(value) - 2  # the quotes
        if size > limit:
            raise ValueError(f"must be at most {limit} bytes (UTF-8, as JSON); got {size}")
        return value
    return check


# max_length (characters) is a cheap first bound the schema can publish; bytes decide.
OutputText = Annotated[str, Field(max_length=MAX_OUTPUT_BYTES, description=(
    f"At most {MAX_OUTPUT_BYTES} bytes (UTF-8, as JSON).")), AfterValidator(
    _at_most(MAX_OUTPUT_BYTES))]
ReasonText = Annotated[str, Field(max_length=MAX_REASON_BYTES, description=(
    f"At most {MAX_REASON_BYTES} bytes (UTF-8, as JSON).")), AfterValidator(
    _at_most(MAX_REASON_BYTES))]


def _finite_and_shallow(value: JsonValue, info: ValidationInfo) -> JsonValue:
    """Refuse NaN and Infinity (stored as null) and nesting past ``MAX_JSON_DEPTH``."""
    if _stored(info):
        return value
    stack: list[tuple[JsonValue, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        where = f" (at {path})" if path else ""
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"must be a finite number, not NaN or Infinity{where}")
        if isinstance(item, dict | list) and depth >= MAX_JSON_DEPTH:
            raise ValueError(f"must nest at most {MAX_JSON_DEPTH} levels deep{where}")
        children: list[tuple[str, JsonValue]] = (
            list(item.items()) if isinstance(item, dict)
            else [(str(index), child) for index, child in enumerate(item)]
            if isinstance(item, list) else [])
        stack.extend((child, f"{path}.{key}" if path else key, depth + 1)
                     for key, child in children)
    return value


FiniteJson = Annotated[JsonValue, AfterValidator(_finite_and_shallow)]


def _json_at_most(limit: int) -> Callable[[dict[str, JsonValue], ValidationInfo],
                                          dict[str, JsonValue]]:
    def check(value: dict[str, JsonValue], info: ValidationInfo) -> dict[str, JsonValue]:
        if _stored(info):
            return value
        size = stored_size(value)
        if size > limit:
            raise ValueError(f"must be at most {limit} bytes as JSON; got {size}")
        return value
    return check


class Action(BaseModel):
    """The side effect the decision would cause, executed at most once."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    params: Annotated[dict[str, FiniteJson], AfterValidator(_json_at_most(MAX_PARAMS_BYTES))
                      ] = Field(default_factory=dict, description=(
                          f"At most {MAX_PARAMS_BYTES} bytes as JSON, {MAX_JSON_DEPTH} levels "
                          "deep, numbers finite."))
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
    """What the risk modifiers read, plus free-form extras shown to reviewers.

    At most ``MAX_CONTEXT_BYTES`` as JSON, extras included; each extra is finite
    JSON nested at most ``MAX_JSON_DEPTH`` deep."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FiniteJson] = Field(init=False)

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

    @model_validator(mode="after")
    def _small_enough(self, info: ValidationInfo) -> DecisionContext:
        if _stored(info):
            return self
        size = stored_size(self)
        if size > MAX_CONTEXT_BYTES:
            raise ValueError(f"must be at most {MAX_CONTEXT_BYTES} bytes as JSON, extras "
                             f"included; got {size}")
        return self


class DecisionRequest(BaseModel):
    """One AI decision submitted for routing."""

    model_config = ConfigDict(extra="forbid")

    decision_id: DecisionId
    task_type: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    action: Action
    output: OutputText = Field(description="The model's response to deliver.")
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


def over_limits(value: BaseModel) -> str | None:
    """Why ``value`` (read back with ``STORED``) breaks the limits of new input, naming the
    field, or None. The workflow asks this of reviewer actions that reach it directly."""
    try:
        type(value).model_validate(value.model_dump(mode="json", round_trip=True))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(root)"
        return f"{where}: {first['msg']}"
    return None
