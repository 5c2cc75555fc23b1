"""The executed amount sets the risk: amounts are read from the action as well as the
context, the largest counts, and one that is not a number goes to a person as critical."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl.amounts import parse_amount_path, read_amounts
from hitl.cascade import JudgeResult
from hitl.enums import LayerStatus, RiskLevel, Zone
from hitl.errors import PolicyError
from hitl.policy import Policy, assess, assess_risk, load_policy, parse_policy, route
from hitl.request import Action
from hitl.rules import check_rules
from tests.conftest import test_policy as policy_with
from tests.factories import make_request

POLICY = load_policy()
SKIPPED = JudgeResult(status=LayerStatus.SKIPPED)


def refund(amount: Any, context_amount: float = 0, **overrides: Any) -> Any:
    return make_request(
        task_type="refund_request", confidence=0.95, output="Refund issued",
        action={"type": "refund", "params": {"amount": amount, "currency": "USD"},
                "reversible": False},
        context={"amount": context_amount}, **overrides)


def zone_of(request: Any, policy: Policy = POLICY) -> Zone:
    assessment = assess(request, policy, judge_configured=False)
    failures = [f.rule for f in check_rules(request, policy) if not f.passed]
    return route(confidence=request.confidence, reversible=request.action.reversible,
                 assessment=assessment, rule_failures=failures, judge=SKIPPED).zone


def amount_limit(request: Any, policy: Policy = POLICY) -> Any:
    return next(f for f in check_rules(request, policy) if f.rule == "amount_limit")


# ------------------------------------------------------------- the reproduction

def test_the_executed_amount_sets_the_risk() -> None:
    """Context says 0, the action refunds 99,999: critical, so never AUTO."""
    request = refund(99_999)
    risk, reasons = assess_risk(request, POLICY)
    assert risk is RiskLevel.CRITICAL
    assert "amount action.params.amount=99999 > 10000: critical" in reasons
    assert zone_of(request) is Zone.ESCALATE
    small = refund(12.5, 12.5)  # and only then: a small refund keeps its task type's risk
    assert assess_risk(small, POLICY) == (RiskLevel.MEDIUM,
                                          ["task type refund_request: medium (unknown type)"])
    assert amount_limit(small).passed
    assert zone_of(small) is Zone.AUTO


@pytest.mark.parametrize(("context_amount", "params_amount", "named"), [
    (5, 20_000, "action.params.amount=20000"),
    (20_000, 5, "context.amount=20000"),
    (0, -20_000, "action.params.amount=-20000"),  # a negative adjustment moves money too
])
def test_the_largest_amount_counts(context_amount: float, params_amount: float,
                                   named: str) -> None:
    risk, reasons = assess_risk(refund(params_amount, context_amount), POLICY)
    assert risk is RiskLevel.CRITICAL
    assert any(reason.startswith(f"amount {named} > 10000") for reason in reasons)


# -------------------------------------------------- amounts that are not numbers

NOT_NUMBERS = [
    ({"value": 99_999}, "an object"),
    ([99_999], "a list"),
    (True, "a boolean"),
    (None, "null"),
    ("lots", "a string that is not a number"),
    ("1_000", "a string that is not a number"),  # float() would read 1000
    ("٥٠٠", "a string that is not a number"),  # float() would read 500
    (" 500", "a string that is not a number"),
    ("inf", "a string that is not a number"),
    ("NaN", "a string that is not a number"),
    ("1e400", "not a finite number"),
    (10**20, "an integer beyond ±2^53"),
    (1e300, "beyond ±2^53"),
    ("1e20", "beyond ±2^53"),
]


@pytest.mark.parametrize(("amount", "kind"), NOT_NUMBERS)
def test_an_amount_that_is_not_a_number_goes_to_a_person(amount: Any, kind: str) -> None:
    request = refund(amount)
    found = amount_limit(request)
    assert not found.passed
    assert found.detail.startswith(f"action.params.amount is not a number ({kind}")
    risk, reasons = assess_risk(request, POLICY)
    assert risk is RiskLevel.CRITICAL
    assert any(r.startswith("amount action.params.amount is not a number") for r in reasons)
    assert zone_of(request) is Zone.ESCALATE


@pytest.mark.parametrize(("amount", "value"), [
    ("500", 500.0), ("12.50", 12.5), ("-3", -3.0), ("1e3", 1000.0), (0, 0.0), (2**53, 2.0**53),
])
def test_plain_numbers_and_numeric_strings_are_read(amount: Any, value: float) -> None:
    [_, found] = read_amounts(refund(amount), POLICY).amounts
    assert (found.path, found.value, found.problem) == ("action.params.amount", value, "")


def test_a_missing_amount_is_no_amount() -> None:
    request = make_request(action={"type": "set_label", "params": {"label": "billing"}})
    reading = read_amounts(request, POLICY)
    assert [a.path for a in reading.amounts] == ["context.amount"]
    assert amount_limit(request).passed


JSON = st.recursive(
    # Non-finite floats are refused when a request is built (hitl.request): not here.
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                               max_size=3),
    max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(amount=JSON)
def test_only_a_bounded_number_can_pass_or_stay_below_critical(amount: Any) -> None:
    """Whatever JSON value the action carries as its amount: the rule passes only for a
    number within [0, the refund cap], and risk stays below critical only for one within
    [-10,000, 10,000]."""
    request = refund(amount)
    passed = amount_limit(request).passed
    critical = assess_risk(request, POLICY)[0] is RiskLevel.CRITICAL
    if amount is None or isinstance(amount, bool | dict | list):
        assert not passed and critical
    if passed:
        assert isinstance(amount, int | float | str) and 0 <= float(amount) <= 100_000
    if not critical:
        assert isinstance(amount, int | float | str) and abs(float(amount)) <= 10_000


# --------------------------------------------------------- paths from the policy

def test_amount_paths_come_from_the_policy() -> None:
    policy = policy_with(risk={"amount_paths": ["context.amount",
                                                "action.params.lines[*].amount",
                                                "context.order.total"]})
    request = make_request(
        task_type="refund_request",
        action={"type": "refund", "params": {"amount": 1, "lines": [
            {"amount": 10}, {"sku": "x"}, {"amount": 25_000}]}},
        context={"order": {"total": 300}})
    reading = read_amounts(request, policy)
    assert [(a.path, a.value) for a in reading.amounts] == [
        ("context.amount", 0.0), ("action.params.lines[0].amount", 10.0),
        ("action.params.lines[2].amount", 25_000.0), ("context.order.total", 300.0)]
    risk, reasons = assess_risk(request, policy)
    assert risk is RiskLevel.CRITICAL
    assert "amount action.params.lines[2].amount=25000 > 10000: critical" in reasons
    # params.amount is not among this policy's paths: 1 is not read, and 2,000,000 would not be.
    assert amount_limit(request, policy).passed


@pytest.mark.parametrize(("params", "problem"), [
    ({"lines": {"0": {"amount": 5}}}, "action.params.lines is not a number (an object where a "
                                      "list was expected)"),
    ({"lines": [5]}, "action.params.lines[0] is not a number (a number where an object was "
                     "expected)"),
    ({"lines": None}, "action.params.lines is not a number (null where a list was expected)"),
])
def test_a_value_of_the_wrong_shape_on_the_way_cannot_be_read(params: dict[str, Any],
                                                              problem: str) -> None:
    policy = policy_with(risk={"amount_paths": ["action.params.lines[*].amount"]})
    request = make_request(task_type="refund_request", action={"type": "refund",
                                                               "params": params})
    found = amount_limit(request, policy)
    assert not found.passed and found.detail == problem
    assert assess_risk(request, policy)[0] is RiskLevel.CRITICAL


def test_an_edited_action_is_read_like_a_submitted_one() -> None:
    """The lead re-screens a reviewer's edit by copying the request with the new action."""
    request = refund(50)
    edited = request.model_copy(update={"action": Action(
        type="refund", params={"amount": {"cents": 5_000_000}}, reversible=False)})
    assert assess_risk(request, POLICY)[0] is RiskLevel.MEDIUM
    assert assess_risk(edited, POLICY)[0] is RiskLevel.CRITICAL
    assert not amount_limit(edited).passed


@pytest.mark.parametrize(("path", "words"), [
    ("amount", "must start with 'context.' or 'action.params.'"),
    ("action.amount", "must start with"),
    ("context", "must start with"),
    ("contextual.amount", "must start with"),
    ("context.", "unexpected"),
    ("context..amount", "unexpected"),
    ("context.a b", "unexpected"),
    ("action.params.lines[x]", "unexpected"),
    ("action.params.lines[-1]", "unexpected"),
    ("context" + ".a" * 17, "deeper than 16"),
    ("context." + "a" * 200, "longer than 200"),
])
def test_bad_amount_paths_are_refused_naming_the_field(path: str, words: str) -> None:
    data = POLICY.model_dump(mode="json")
    data["risk"]["amount_paths"] = ["context.amount", path]
    with pytest.raises(PolicyError) as caught:
        parse_policy(data)
    assert caught.value.field == "risk.amount_paths.1"
    assert words in str(caught.value)
    with pytest.raises(ValueError, match="amount path"):
        parse_amount_path(path)


def test_at_least_one_amount_path() -> None:
    data = POLICY.model_dump(mode="json")
    data["risk"]["amount_paths"] = []
    with pytest.raises(PolicyError) as caught:
        parse_policy(data)
    assert caught.value.field == "risk.amount_paths"
    assert "at least 1 item" in str(caught.value)


def test_stored_versions_keep_their_digest_while_the_paths_are_the_default() -> None:
    """A version stored before ``amount_paths`` existed hashes to its name as before
    (hitl.policy_versions refuses a body that does not); other paths change the digest."""
    data = POLICY.model_dump(mode="json")
    del data["risk"]["amount_paths"]
    del data["review"]["token_lifetime"]  # added since, as amount_paths was
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]
    assert parse_policy(data).full_version == POLICY.full_version == f"default-1+{digest}"
    custom = policy_with(risk={"amount_paths": ["action.params.amount"]})
    assert custom.full_version != POLICY.full_version
