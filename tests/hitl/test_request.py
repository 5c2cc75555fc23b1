"""The request model is the first gate: bad input is refused and the error names the field."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hitl.request import DecisionRequest
from tests.factories import make_request


def error_locs(**overrides: Any) -> set[tuple[str | int, ...]]:
    """The locations of every validation error for a request with ``overrides``."""
    with pytest.raises(ValidationError) as caught:
        make_request(**overrides)
    return {tuple(error["loc"]) for error in caught.value.errors()}


@pytest.mark.parametrize("confidence", [math.nan, math.inf, -math.inf, -0.1, 1.1, "high"])
def test_bad_confidence_names_the_field(confidence: Any) -> None:
    assert error_locs(confidence=confidence) == {("confidence",)}


@pytest.mark.parametrize("decision_id", ["has space", "", "x" * 201, "-leading-dash", "a/b"])
def test_bad_decision_id_names_the_field(decision_id: str) -> None:
    assert error_locs(decision_id=decision_id) == {("decision_id",)}


def test_decision_id_of_exactly_200_chars_is_accepted() -> None:
    assert make_request(decision_id="a" * 200).decision_id == "a" * 200


def test_unknown_top_level_field_is_refused() -> None:
    assert error_locs(priority="urgent") == {("priority",)}


def test_unknown_action_field_is_refused() -> None:
    assert error_locs(action={"retries": 3}) == {("action", "retries")}


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "example.com",
                                 "javascript:alert(1)"])
def test_target_url_must_be_http(url: str) -> None:
    assert error_locs(action={"target_url": url}) == {("action", "target_url")}


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/act", "https://api.example.com/v1/x"])
def test_http_target_urls_are_accepted(url: str) -> None:
    assert make_request(action={"target_url": url}).action.target_url == url


@pytest.mark.parametrize("amount", [-0.01, -5, math.nan, math.inf, -math.inf, "inf", "nan"])
def test_bad_amount_names_the_field(amount: Any) -> None:
    assert error_locs(context={"amount": amount}) == {("context", "amount")}


@pytest.mark.parametrize("score", [-0.1, 1.1, math.nan, math.inf])
def test_candidate_score_out_of_range(score: float) -> None:
    candidates = [{"outcome": "billing", "score": 0.5}, {"outcome": "x", "score": score}]
    assert error_locs(candidates=candidates) == {("candidates", 1, "score")}


def test_too_many_candidates() -> None:
    candidates = [{"outcome": f"o{i}", "score": 0.01} for i in range(21)]
    assert error_locs(candidates=candidates) == {("candidates",)}
    assert len(make_request(candidates=candidates[:20]).candidates) == 20


def test_context_extras_are_kept() -> None:
    request = make_request(context={"ticket": "charged twice", "order": {"id": 7, "lines": [1, 2]}})
    extras = request.context.model_extra
    assert extras == {"ticket": "charged twice", "order": {"id": 7, "lines": [1, 2]}}
    dumped = request.model_dump(mode="json")["context"]
    assert dumped["order"] == {"id": 7, "lines": [1, 2]}
    assert DecisionRequest.model_validate(request.model_dump()).context.model_extra == extras


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.0, max_value=1.0, allow_nan=False))
def test_any_confidence_in_unit_interval_validates(confidence: float) -> None:
    assert make_request(confidence=confidence).confidence == confidence


@settings(max_examples=200, deadline=None)
@given(st.floats().filter(lambda x: not 0.0 <= x <= 1.0))
def test_any_confidence_outside_unit_interval_is_refused(confidence: float) -> None:
    assert error_locs(confidence=confidence) == {("confidence",)}


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=0.0, allow_nan=False, allow_infinity=False))
def test_any_finite_non_negative_amount_validates(amount: float) -> None:
    assert make_request(context={"amount": amount}).context.amount == amount


# payload_sha256: the resubmission check.

BASE: dict[str, Any] = {
    "decision_id": "d-sha",
    "task_type": "refund_request",
    "action": {"type": "refund", "params": {"amount": 12.5, "currency": "EUR"},
               "reversible": False, "target_url": "https://pay.example.com/refunds"},
    "output": "Refund 12.50 EUR",
    "confidence": 0.91,
    "outcome": "refund",
    "candidates": [{"outcome": "refund", "score": 0.91}, {"outcome": "deny", "score": 0.09}],
    "context": {"amount": 12.5, "is_new_user": True, "requested_by": "svc",
                "ticket": "double charge", "meta": {"a": 1, "b": [1, 2]}},
}


def reorder(value: Any) -> Any:
    """The same value with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {key: reorder(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reorder(item) for item in value]
    return value


def sha(data: dict[str, Any]) -> str:
    return DecisionRequest.model_validate(data).payload_sha256()


def test_sha_is_stable_across_key_order() -> None:
    assert list(reorder(BASE)) == list(reversed(list(BASE)))
    assert sha(reorder(BASE)) == sha(BASE)
    assert len(sha(BASE)) == 64


def test_sha_of_defaults_equals_sha_of_explicit_defaults() -> None:
    minimal = {"decision_id": "d1", "task_type": "t", "action": {"type": "a"},
               "output": "o", "confidence": 0.5}
    explicit = {**minimal, "candidates": [], "outcome": None,
                "action": {"type": "a", "params": {}, "reversible": False, "target_url": None}}
    assert sha(minimal) == sha(explicit)


def _changed(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    data: dict[str, Any] = reorder(reorder(BASE))  # a deep copy
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(("path", "value"), [
    (("decision_id",), "d-sha2"),
    (("task_type",), "refund_requests"),
    (("action", "type"), "refund2"),
    (("action", "params", "amount"), 12.51),
    (("action", "params", "currency"), "USD"),
    (("action", "reversible"), True),
    (("action", "target_url"), "https://pay.example.com/refund"),
    (("output",), "Refund 12.50 EUR."),
    (("confidence",), 0.9100001),
    (("outcome",), "deny"),
    (("candidates", 1, "score"), 0.08),
    (("candidates", 0, "outcome"), "refund_full"),
    (("context", "amount"), 12.0),
    (("context", "is_new_user"), False),
    (("context", "affects_multiple_users"), True),
    (("context", "requested_by"), "svc2"),
    (("context", "ticket"), "double charged"),
    (("context", "meta", "b"), [2, 1]),
])
def test_sha_changes_when_any_field_changes(path: tuple[str | int, ...], value: Any) -> None:
    assert sha(_changed(path, value)) != sha(BASE)


def test_sha_changes_when_an_extra_is_added() -> None:
    data = _changed(("context", "note"), "x")
    assert sha(data) != sha(BASE)


@pytest.mark.parametrize("url", ["http://", "https:///path", "http:// /x"])
def test_target_url_needs_a_host(url: str) -> None:
    with pytest.raises(ValidationError) as error:
        make_request(action={"target_url": url})
    assert error.value.errors()[0]["loc"] == ("action", "target_url")
