"""The routing policy: risk, thresholds, zones and policy files, as plain functions."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl.cascade import Assessment, JudgeResult, Routing, SlaPolicy
from hitl.enums import LayerStatus, RiskLevel, Zone
from hitl.errors import PolicyError
from hitl.policy import (
    Policy,
    assess,
    assess_risk,
    load_policy,
    parse_policy,
    route,
    threshold_for,
)
from tests.conftest import test_policy as policy_with
from tests.factories import make_request

POLICY = load_policy()
PASSED = JudgeResult(status=LayerStatus.PASSED, score=0.9)
SKIPPED = JudgeResult(status=LayerStatus.SKIPPED)
FAILED = JudgeResult(status=LayerStatus.FAILED, score=0.1)
ERROR = JudgeResult(status=LayerStatus.ERROR)


def risk_of(policy: Policy = POLICY, **overrides: Any) -> RiskLevel:
    return assess_risk(make_request(**overrides), policy)[0]


# Risk: static by task type, raised by dynamic modifiers.

@pytest.mark.parametrize(("task_type", "risk"), [
    ("ticket_classification", RiskLevel.LOW),
    ("search_autocomplete", RiskLevel.LOW),
    ("tag_generation", RiskLevel.LOW),
    ("content_moderation", RiskLevel.HIGH),
    ("price_adjustment", RiskLevel.HIGH),
    ("fraud_detection", RiskLevel.HIGH),
    ("medical_triage", RiskLevel.CRITICAL),
    ("account_deletion", RiskLevel.CRITICAL),
    ("refund_request", RiskLevel.MEDIUM),
])
def test_static_risk(task_type: str, risk: RiskLevel) -> None:
    found, reasons = assess_risk(make_request(task_type=task_type), POLICY)
    assert found is risk
    assert len(reasons) == 1
    assert ("unknown type" in reasons[0]) == (task_type == "refund_request")


@pytest.mark.parametrize(("amount", "risk"), [
    (0, RiskLevel.LOW), (10_000, RiskLevel.LOW), (10_000.01, RiskLevel.CRITICAL),
    (1_000_000, RiskLevel.CRITICAL),
])
def test_amount_above_10000_is_critical(amount: float, risk: RiskLevel) -> None:
    assert risk_of(context={"amount": amount}) is risk


@pytest.mark.parametrize(("task_type", "risk"), [
    ("ticket_classification", RiskLevel.HIGH),
    ("refund_request", RiskLevel.HIGH),
    ("content_moderation", RiskLevel.HIGH),
    ("medical_triage", RiskLevel.CRITICAL),
])
def test_new_user_is_at_least_high_and_never_lowers(task_type: str, risk: RiskLevel) -> None:
    assert risk_of(task_type=task_type, context={"is_new_user": True}) is risk


@pytest.mark.parametrize("task_type", ["ticket_classification", "refund_request",
                                       "fraud_detection", "account_deletion"])
def test_affecting_multiple_users_is_critical(task_type: str) -> None:
    assert risk_of(task_type=task_type, context={"affects_multiple_users": True}) is (
        RiskLevel.CRITICAL)


def test_modifiers_combine_and_every_one_is_reported() -> None:
    risk, reasons = assess_risk(make_request(
        context={"amount": 20_000, "is_new_user": True, "affects_multiple_users": True}), POLICY)
    assert risk is RiskLevel.CRITICAL
    assert len(reasons) == 4
    assert any("amount" in r for r in reasons)
    assert any("new user" in r for r in reasons)
    assert any("multiple users" in r for r in reasons)


def test_new_user_with_small_amount_is_only_high() -> None:
    assert risk_of(context={"amount": 9_999, "is_new_user": True}) is RiskLevel.HIGH


def test_modifier_settings_come_from_the_policy() -> None:
    policy = policy_with(risk={"amount_critical_above": 100, "new_user_min_risk": "medium"})
    assert risk_of(policy, context={"amount": 101}) is RiskLevel.CRITICAL
    assert risk_of(policy, context={"is_new_user": True}) is RiskLevel.MEDIUM


# Thresholds: outcome > task type > risk; a raised risk brings its stricter bar.

def bar(policy: Policy = POLICY, **overrides: Any) -> tuple[float, str]:
    request = make_request(**overrides)
    return threshold_for(request, policy, assess_risk(request, policy)[0])


@pytest.mark.parametrize(("overrides", "expected", "source"), [
    ({"task_type": "content_moderation", "outcome": "approve"}, 0.92, "outcome"),
    ({"task_type": "content_moderation", "outcome": "remove"}, 0.95, "outcome"),
    ({"task_type": "content_moderation", "outcome": "escalate"}, 0.95, "task type"),
    ({"task_type": "content_moderation"}, 0.95, "task type"),
    ({"task_type": "ticket_classification", "outcome": "approve"}, 0.80, "task type"),
    ({"task_type": "tag_generation"}, 0.70, "task type"),
    ({"task_type": "refund_request"}, 0.85, "risk medium"),
    ({"task_type": "account_deletion"}, 0.99, "risk critical"),
])
def test_threshold_precedence(overrides: dict[str, Any], expected: float, source: str) -> None:
    threshold, where = bar(**overrides)
    assert threshold == expected
    assert where.startswith(source)


def test_raised_risk_uses_the_stricter_risk_bar() -> None:
    assert bar(context={"is_new_user": True}) == (0.90, "risk high (raised from low)")
    threshold, where = bar(task_type="content_moderation", outcome="approve",
                           context={"amount": 50_000})
    assert (threshold, where) == (0.99, "risk critical (raised from high)")


def test_unraised_risk_keeps_the_specific_bar() -> None:
    # content_moderation is high by itself: a new user does not raise it.
    assert bar(task_type="content_moderation", outcome="approve",
               context={"is_new_user": True}) == (0.92, "outcome content_moderation/approve")


def test_raised_risk_keeps_a_specific_bar_that_is_stricter() -> None:
    policy = policy_with(thresholds={"task_types": {"ticket_classification": 0.97}})
    assert bar(policy, context={"is_new_user": True}) == (0.97, "task type ticket_classification")


# Routing.

def routed(*, judge: JudgeResult = PASSED, rule_failures: list[str] | None = None,
           policy: Policy = POLICY, **overrides: Any) -> Routing:
    request = make_request(**overrides)
    return route(confidence=request.confidence, reversible=request.action.reversible,
                 assessment=assess(request, policy, judge_configured=True),
                 rule_failures=rule_failures or [], judge=judge)


def test_auto() -> None:
    routing = routed(confidence=0.95)
    assert routing.zone is Zone.AUTO
    assert routing.sla_seconds is None


def test_confidence_exactly_at_threshold_is_confident() -> None:
    assert routed(confidence=0.80).zone is Zone.AUTO


def test_auto_audit_at_high_risk() -> None:
    routing = routed(task_type="content_moderation", confidence=0.96)
    assert routing.zone is Zone.AUTO_AUDIT
    assert routing.sla_seconds is None


def test_queue_below_threshold_at_low_risk() -> None:
    routing = routed(confidence=0.5)
    assert routing.zone is Zone.QUEUE
    assert routing.sla_seconds == 3600


def test_escalate_below_threshold_at_high_risk() -> None:
    routing = routed(task_type="fraud_detection", confidence=0.5)
    assert routing.zone is Zone.ESCALATE
    assert routing.sla_seconds == 300


@pytest.mark.parametrize("task_type", ["medical_triage", "account_deletion"])
def test_critical_always_escalates(task_type: str) -> None:
    routing = routed(task_type=task_type, confidence=1.0, judge=PASSED)
    assert routing.zone is Zone.ESCALATE
    assert routing.sla_seconds == 300
    assert any("critical" in reason for reason in routing.reasons)


def test_critical_by_modifier_escalates() -> None:
    assert routed(confidence=1.0, context={"affects_multiple_users": True}).zone is Zone.ESCALATE


@pytest.mark.parametrize(("judge", "rule_failures"), [
    (FAILED, []), (ERROR, []), (PASSED, ["banned_terms"]), (SKIPPED, ["amount_limit"]),
])
@pytest.mark.parametrize(("task_type", "zone"), [
    ("ticket_classification", Zone.QUEUE),
    ("refund_request", Zone.QUEUE),
    ("content_moderation", Zone.ESCALATE),
])
def test_failures_force_a_person(judge: JudgeResult, rule_failures: list[str], task_type: str,
                                 zone: Zone) -> None:
    routing = routed(task_type=task_type, confidence=1.0, judge=judge,
                     rule_failures=rule_failures)
    assert routing.zone is zone
    assert routing.sla_seconds == (300 if zone is Zone.ESCALATE else 3600)


def test_each_forcing_reason_is_reported() -> None:
    routing = routed(confidence=1.0, judge=ERROR, rule_failures=["banned_terms", "output_length"])
    text = " ".join(routing.reasons)
    assert "rule failed: banned_terms" in text
    assert "rule failed: output_length" in text
    assert "judge" in text


@pytest.mark.parametrize(("task_type", "zone"), [
    ("ticket_classification", Zone.AUTO), ("content_moderation", Zone.AUTO_AUDIT)])
def test_skipped_judge_does_not_force(task_type: str, zone: Zone) -> None:
    assert routed(task_type=task_type, confidence=0.99, judge=SKIPPED).zone is zone


# The respond-now middle band.

@pytest.mark.parametrize(("confidence", "sla"), [
    (0.60, 0.0), (0.75, 0.0), (0.7999, 0.0), (0.5999, 3600.0), (0.1, 3600.0)])
def test_respond_now_band(confidence: float, sla: float) -> None:
    routing = routed(confidence=confidence)
    assert routing.zone is Zone.QUEUE
    assert routing.sla_seconds == sla
    assert any("respond now" in r for r in routing.reasons) == (sla == 0.0)


@pytest.mark.parametrize("overrides", [
    {"action": {"reversible": False}},
    {"task_type": "refund_request"},
    {"context": {"is_new_user": True}},
    {"rule_failures": ["banned_terms"]},
    {"judge": FAILED},
    {"judge": ERROR},
])
def test_respond_now_needs_reversible_low_risk_unforced(overrides: dict[str, Any]) -> None:
    routing = routed(confidence=0.7, **overrides)
    assert routing.zone.needs_review
    assert routing.sla_seconds != 0.0


def test_respond_now_honours_the_policy() -> None:
    medium = policy_with(respond_now={"risks": ["low", "medium"]})
    assert routed(policy=medium, task_type="refund_request", confidence=0.7).sla_seconds == 0.0
    off = policy_with(respond_now={"min_confidence": None})
    assert routed(policy=off, confidence=0.79).sla_seconds == 3600


ASSESSMENT = assess(make_request(), POLICY, judge_configured=True)


@settings(max_examples=500, deadline=None)
@given(
    confidence=st.floats(0.0, 1.0),
    threshold=st.floats(0.0, 1.0),
    risk=st.sampled_from(RiskLevel),
    judge=st.sampled_from(LayerStatus),
    reversible=st.booleans(),
    rule_failures=st.lists(st.sampled_from(["action_schema", "banned_terms"]), max_size=2),
    floor=st.none() | st.floats(0.0, 1.0),
    respond_now=st.lists(st.sampled_from(RiskLevel), unique=True),
)
def test_critical_or_failing_judge_never_runs_alone(
    confidence: float, threshold: float, risk: RiskLevel, judge: LayerStatus, reversible: bool,
    rule_failures: list[str], floor: float | None, respond_now: list[RiskLevel],
) -> None:
    assessment = ASSESSMENT.model_copy(update={
        "risk": risk, "threshold": threshold, "respond_now_min_confidence": floor,
        "respond_now_risks": respond_now,
        "sla": SlaPolicy(queue_seconds=3600, escalate_seconds=300, hard_deadline_seconds=86400),
    })
    routing = route(confidence=confidence, reversible=reversible, assessment=assessment,
                    rule_failures=rule_failures, judge=JudgeResult(status=judge))
    forced = (risk is RiskLevel.CRITICAL or judge in (LayerStatus.FAILED, LayerStatus.ERROR)
              or bool(rule_failures))
    if forced:
        assert routing.zone in (Zone.QUEUE, Zone.ESCALATE)
        assert routing.sla_seconds not in (None, 0.0)
    if risk.rank >= RiskLevel.HIGH.rank and routing.zone.needs_review:
        assert routing.zone is Zone.ESCALATE
    if not forced and confidence >= threshold:
        assert routing.zone in (Zone.AUTO, Zone.AUTO_AUDIT)


def test_assessment_carries_the_policy() -> None:
    assessment = assess(make_request(task_type="fraud_detection"), POLICY, judge_configured=False)
    assert isinstance(assessment, Assessment)
    assert assessment.policy_version == POLICY.full_version
    assert assessment.risk is RiskLevel.HIGH
    assert assessment.sla == SlaPolicy(queue_seconds=3600, escalate_seconds=300,
                                       hard_deadline_seconds=86400)
    assert assessment.audit_sample_rate == 0.2
    assert assessment.respond_now_min_confidence == 0.6
    assert assessment.respond_now_risks == [RiskLevel.LOW]
    assert assessment.judge_configured is False


# Policy files.

DEFAULT_TEXT = resources.files("hitl").joinpath("default_policy.toml").read_text()
MINIMAL = """\
version = "t-1"
[thresholds.by_risk]
low = 0.7
medium = 0.85
high = 0.9
critical = 0.99
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_minimal_policy_file_loads_with_defaults(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, MINIMAL))
    assert policy.version == "t-1"
    assert policy.sla.queue == 3600
    assert policy.risk.default is RiskLevel.MEDIUM


def test_default_policy_file_round_trips(tmp_path: Path) -> None:
    assert load_policy(write(tmp_path, DEFAULT_TEXT)) == POLICY


@pytest.mark.parametrize(("text", "field", "words"), [
    ("version = \n", "policy", "TOML"),
    ("bogus = 1\n" + MINIMAL, "bogus", "Extra"),
    (MINIMAL + "[risk]\nmax_risk = 'high'\n", "risk.max_risk", "Extra"),
    (MINIMAL.replace("low = 0.7", "low = 1.5"), "thresholds.by_risk.low", "1"),
    (MINIMAL.replace("critical = 0.99\n", ""), "thresholds.by_risk", "critical"),
    (MINIMAL + "[sla]\nescalate = '5 minutes'\n", "sla.escalate", "5 minutes"),
    (MINIMAL + "[sla]\nqueue = '2h'\nhard_deadline = '1h'\n", "sla.hard_deadline",
     "hard_deadline"),
    (MINIMAL + "[sla]\nqueue = '48h'\n", "sla.hard_deadline", "hard_deadline"),
    (MINIMAL + "[rules]\ninjection_patterns = ['ok', '(unclosed']\n",
     "rules.injection_patterns", "injection_patterns[1]"),
    (MINIMAL + "[respond_now]\nrisks = ['low', 'critical']\n", "respond_now.risks", "critical"),
    (MINIMAL + "[risk.task_types]\nx = 'severe'\n", "risk.task_types.x", "'critical'"),
], ids=["toml", "unknown-key", "unknown-section-key", "threshold-1.5", "missing-risk",
        "bad-duration", "deadline-before-sla", "sla-after-default-deadline", "bad-regex",
        "respond-now-critical", "bad-risk"])
def test_policy_errors_name_the_field(tmp_path: Path, text: str, field: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.field == field
    assert str(path) in str(caught.value)
    assert field == "policy" or field in str(caught.value)
    assert words in str(caught.value)


@pytest.mark.parametrize("name", ["missing.toml", "."])
def test_unreadable_policy_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.field == "policy"
    assert "cannot read" in str(caught.value)


def test_full_version_follows_content(tmp_path: Path) -> None:
    same = load_policy(write(tmp_path, DEFAULT_TEXT))
    assert same.full_version == POLICY.full_version
    assert POLICY.full_version.startswith("default-1+")
    edited = load_policy(write(tmp_path, DEFAULT_TEXT.replace("sample_rate = 0.2",
                                                              "sample_rate = 0.25")))
    assert edited.version == POLICY.version
    assert edited.full_version != POLICY.full_version
    assert edited.full_version.startswith("default-1+")


def test_four_eyes_config_names_the_field_and_resolves_per_task_type() -> None:
    data = load_policy().model_dump(mode="json")
    data["review"] = {"approvals_by_risk": {"critical": 9}}
    with pytest.raises(PolicyError) as error:
        parse_policy(data)
    assert error.value.field == "review.approvals_by_risk.critical"
    data["review"] = {"approvals_by_risk": {"critical": 2, "high": 1},
                      "approvals_by_task_type": {"medical_triage": 3}}
    review = parse_policy(data).review
    assert review.required("medical_triage", RiskLevel.CRITICAL) == 3
    assert review.required("account_deletion", RiskLevel.CRITICAL) == 2
    assert review.required("ticket_classification", RiskLevel.LOW) == 1
