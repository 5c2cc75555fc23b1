"""The limits of ``hitl.limits`` as the models apply them, from Python (client, CLI, worker).

Text is counted in bytes as stored (UTF-8 in JSON, escapes included); free-form JSON
must be finite (pydantic would store NaN as null) and shallow. Every refusal names
the field, and the inner path where there is one.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from hitl.limits import (
    MAX_CONTEXT_BYTES,
    MAX_JSON_DEPTH,
    MAX_OUTPUT_BYTES,
    MAX_PARAMS_BYTES,
    MAX_REASON_BYTES,
)
from hitl.payloads import RegenerateResult
from hitl.request import DecisionContext, DecisionRequest, stored_size
from hitl.review import ApproveInput, RejectInput
from tests.factories import make_request

GRIN = "\U0001F600"  # 4 bytes of UTF-8


def _refusal(build: Any) -> tuple[tuple[str | int, ...], str]:
    with pytest.raises(ValidationError) as caught:
        build()
    [error] = caught.value.errors()
    return tuple(error["loc"]), error["msg"]


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_in_params_are_refused_naming_where(bad: float) -> None:
    loc, msg = _refusal(lambda: make_request(
        action={"params": {"post_id": "p", "limits": {"daily": [1, bad]}}}))
    assert loc == ("action", "params", "limits") and "finite" in msg and "daily.1" in msg


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_numbers_in_context_extras_are_refused(bad: float) -> None:
    assert _refusal(lambda: make_request(context={"risk_score": bad}))[0] == (
        "context", "risk_score")
    assert _refusal(lambda: make_request(context={"scores": {"a": [bad]}}))[0] == (
        "context", "scores")


def test_what_is_accepted_round_trips_unchanged() -> None:
    """The point of refusing NaN: what a reviewer sees is what was sent and stored."""
    request = make_request(action={"params": {"x": [1.5, -2, {"y": None}]}},
                           context={"score": 0.25})
    assert DecisionRequest.model_validate_json(request.model_dump_json()) == request


def test_nesting_is_bounded_in_params_and_extras() -> None:
    make_request(action={"params": {"deep": _nested(MAX_JSON_DEPTH)}},
                 context={"deep": _nested(MAX_JSON_DEPTH)})
    loc, msg = _refusal(lambda: make_request(
        action={"params": {"deep": _nested(MAX_JSON_DEPTH + 1)}}))
    assert loc == ("action", "params", "deep") and f"at most {MAX_JSON_DEPTH} levels" in msg
    assert _refusal(lambda: make_request(context={"deep": _nested(MAX_JSON_DEPTH + 1)}))[0] == (
        "context", "deep")


def test_the_output_is_counted_in_bytes_as_stored() -> None:
    at_limit = GRIN * (MAX_OUTPUT_BYTES // 4)
    assert make_request(output=at_limit).output == at_limit  # 32,768 characters
    loc, msg = _refusal(lambda: make_request(output=at_limit + "x"))
    assert loc == ("output",) and f"at most {MAX_OUTPUT_BYTES} bytes" in msg
    # A NUL is stored as \u0000, six bytes: far fewer characters reach the limit.
    assert _refusal(lambda: make_request(output="\x00" * (MAX_OUTPUT_BYTES // 6 + 1)))[0] == (
        "output",)
    assert make_request(output="x" * MAX_OUTPUT_BYTES).output  # ASCII: one byte a character


@pytest.mark.parametrize(("model", "field", "limit", "extra"), [
    (ApproveInput, "output", MAX_OUTPUT_BYTES, {}),
    (ApproveInput, "reason", MAX_REASON_BYTES, {}),
    (RejectInput, "correct_answer", MAX_OUTPUT_BYTES, {}),
    (RejectInput, "reason", MAX_REASON_BYTES, {}),
    (RegenerateResult, "output", MAX_OUTPUT_BYTES, {"confidence": 0.5}),
])
def test_every_output_and_reason_has_the_same_byte_limit(
        model: type[BaseModel], field: str, limit: int, extra: dict[str, Any]) -> None:
    base = {"reviewer": "bob"} if model is not RegenerateResult else {}
    model.model_validate({**base, **extra, field: GRIN * (limit // 4)})
    loc, _ = _refusal(lambda: model.model_validate({**base, **extra,
                                                    field: GRIN * (limit // 4) + "x"}))
    assert loc == (field,)


def test_params_and_context_are_bounded_as_json() -> None:
    params: dict[str, Any] = {"blob": ""}
    params["blob"] = "x" * (MAX_PARAMS_BYTES - stored_size(params))
    assert stored_size(make_request(action={"params": params}).action.params) == MAX_PARAMS_BYTES
    params["blob"] += "x"
    loc, msg = _refusal(lambda: make_request(action={"params": params}))
    assert loc == ("action", "params") and f"{MAX_PARAMS_BYTES + 1}" in msg

    context = {**make_request().context.model_dump(), "ticket": ""}  # the factory's, merged
    context["ticket"] = "x" * (MAX_CONTEXT_BYTES - stored_size(DecisionContext(**context)))
    assert stored_size(make_request(context=context).context) == MAX_CONTEXT_BYTES
    context["ticket"] += "x"
    assert _refusal(lambda: make_request(context=context))[0] == ("context",)


def test_text_that_cannot_be_stored_is_refused() -> None:
    """A str from bytes decoded with surrogateescape (argv, a file read loosely) would
    fail later in the serializer; it is refused here, naming the field."""
    loc, msg = _refusal(lambda: make_request(action={"params": {"s": ["caf\udce9"]}}))
    assert loc == ("action", "params") and "surrogate" in msg
    assert _refusal(lambda: make_request(output="caf\udce9"))[0] == ("output",)
