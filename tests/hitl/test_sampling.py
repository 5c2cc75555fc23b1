"""Adaptive audit sampling and bounded load shedding as pure functions."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hitl.enums import RiskLevel
from hitl.errors import PolicyError
from hitl.policy import AdaptiveAuditConfig, LoadSheddingConfig, assess, load_policy
from hitl.sampling import AuditStats, adapt, adaptive_sample_rate, shed_threshold
from tests.conftest import test_policy
from tests.factories import make_request

ADAPTIVE = AdaptiveAuditConfig()  # 25% new, 7.5% stable, 50 audits, 2% over 200, 0 in 20
SHEDDING = LoadSheddingConfig(floors={"ticket_classification": 0.75, "tag_generation": 0.68})


def _stats(audited: int, window_errors: int = 0, recent_errors: int = 0) -> AuditStats:
    return AuditStats(audited=audited, window=min(audited, 200), window_errors=window_errors,
                      recent=min(audited, 20), recent_errors=recent_errors)


# ----------------------------------------------------------- adaptive sampling

@pytest.mark.parametrize(("stats", "base", "rate", "reason"), [
    (None, 0.2, 0.25, "new task type: 0 of 50 audits, 25.0%"),
    (_stats(49), 0.2, 0.25, "new task type: 49 of 50 audits, 25.0%"),
    (_stats(50), 0.2, 0.075, "stable: 50 audits, error rate 0.0% <= 2.0%, 7.5%"),
    # 4 errors in 200 = 2.0%: at the bound is stable (the bound is inclusive) ...
    (_stats(500, window_errors=4), 0.2, 0.075, "stable: 500 audits, error rate 2.0% <= 2.0%"),
    # ... 5 in 200 = 2.5% is not.
    (_stats(500, window_errors=5), 0.2, 0.25, "audit error rate 2.5% > 2.0% over the last 200"),
    # One error among the latest 20 raises the rate at once, even with a clean window.
    (_stats(500, window_errors=1, recent_errors=1), 0.2, 0.25,
     "recent audits found errors: 1 in the last 20, 25.0%"),
    # The base rate is never undercut while a task type is new: 100% stays 100%.
    (None, 1.0, 1.0, "new task type: 0 of 50 audits, 100.0%"),
    (_stats(80), 1.0, 0.075, "stable: 80 audits"),
])
def test_hand_computed_sample_rates(stats: AuditStats | None, base: float, rate: float,
                                    reason: str) -> None:
    result = adaptive_sample_rate(stats, base_rate=base, config=ADAPTIVE)
    assert result.rate == rate
    assert result.reason.startswith(reason)


def test_disabled_adaptive_sampling_keeps_the_policy_rate() -> None:
    result = adaptive_sample_rate(None, base_rate=0.2,
                                  config=AdaptiveAuditConfig(enabled=False))
    assert (result.rate, result.reason) == (0.2, "fixed audit rate 20.0%")


def test_a_tolerance_for_recent_errors_is_configurable() -> None:
    config = AdaptiveAuditConfig(recent_max_errors=1)
    assert adaptive_sample_rate(_stats(100, 1, 1), base_rate=0.2, config=config).rate == 0.075
    assert adaptive_sample_rate(_stats(100, 2, 2), base_rate=0.2, config=config).rate == 0.25


counts = st.integers(min_value=0, max_value=10_000)


@st.composite
def audit_stats(draw: st.DrawFn) -> AuditStats:
    audited = draw(counts)
    window = draw(st.integers(0, min(audited, 200)))
    recent = draw(st.integers(0, min(window, 20)))
    recent_errors = draw(st.integers(0, recent))
    window_errors = draw(st.integers(recent_errors, max(window, recent_errors)))
    return AuditStats(audited=audited, window=window, window_errors=window_errors,
                      recent=recent, recent_errors=recent_errors)


@given(st.none() | audit_stats(), st.floats(0.0, 1.0))
def test_the_rate_is_one_of_the_two_levels_and_low_only_when_earned(
        stats: AuditStats | None, base: float) -> None:
    result = adaptive_sample_rate(stats, base_rate=base, config=ADAPTIVE)
    high = max(ADAPTIVE.new_rate, base)
    assert result.rate in (high, ADAPTIVE.stable_rate)
    earned = (stats is not None and stats.audited >= ADAPTIVE.min_audits
              and stats.recent_errors == 0
              and (stats.window == 0 or stats.window_errors / stats.window <= 0.02))
    assert (result.rate == ADAPTIVE.stable_rate) == earned or high == ADAPTIVE.stable_rate


@given(audit_stats())
def test_an_error_never_lowers_the_rate(stats: AuditStats) -> None:
    """More errors, same number of audits: the rate never goes down."""
    before = adaptive_sample_rate(stats, base_rate=0.2, config=ADAPTIVE).rate
    if stats.recent_errors < stats.recent:
        worse = stats.model_copy(update={"recent_errors": stats.recent_errors + 1,
                                         "window_errors": stats.window_errors + 1})
        assert adaptive_sample_rate(worse, base_rate=0.2, config=ADAPTIVE).rate >= before


@pytest.mark.parametrize(("section", "field", "message"), [
    ({"stable_rate": 0.3}, "audit.adaptive.stable_rate", "must not exceed new_rate"),
    ({"recent": 300}, "audit.adaptive.recent", "must not exceed window"),
    ({"new_rate": 1.5}, "audit.adaptive.new_rate", "less than or equal to 1"),
    ({"min_audits": 0}, "audit.adaptive.min_audits", "greater than or equal to 1"),
])
def test_a_bad_adaptive_section_names_its_field(section: dict[str, object], field: str,
                                                message: str) -> None:
    adaptive = {**load_policy().audit.adaptive.model_dump(), **section}
    with pytest.raises(PolicyError, match=message) as info:
        test_policy(audit={"adaptive": adaptive})
    assert info.value.field == field


# -------------------------------------------------------------- load shedding

@pytest.mark.parametrize(("threshold", "risk", "task_type", "depth", "expected", "note"), [
    (0.80, RiskLevel.LOW, "ticket_classification", 1_240, 0.75,
     "load shedding: queue 1,240 > 1,000, threshold 0.80 -> 0.75"),
    # The floor binds before the band does.
    (0.70, RiskLevel.LOW, "tag_generation", 5_000, 0.68,
     "load shedding: queue 5,000 > 1,000, threshold 0.70 -> 0.68"),
    (0.68, RiskLevel.LOW, "tag_generation", 5_000, 0.68,
     "load shedding: queue 5,000 > 1,000, threshold 0.68 already at its floor 0.68"),
    (0.70, RiskLevel.LOW, "search_autocomplete", 5_000, 0.70,
     "load shedding: queue 5,000 > 1,000, no certified floor for search_autocomplete: "
     "threshold kept"),
    (0.80, RiskLevel.LOW, "ticket_classification", 1_000, 0.80, None),  # at the depth: no
    (0.80, RiskLevel.LOW, "ticket_classification", None, 0.80, None),  # backlog never read
    (0.85, RiskLevel.MEDIUM, "ticket_classification", 9_999, 0.85, None),
    (0.90, RiskLevel.HIGH, "ticket_classification", 9_999, 0.90, None),
    (0.99, RiskLevel.CRITICAL, "ticket_classification", 9_999, 0.99, None),
])
def test_hand_computed_load_shedding(threshold: float, risk: RiskLevel, task_type: str,
                                     depth: int | None, expected: float,
                                     note: str | None) -> None:
    assert shed_threshold(threshold=threshold, risk=risk, task_type=task_type,
                          queue_depth=depth, config=SHEDDING) == (expected, note)


def test_the_default_floor_and_the_switch() -> None:
    with_default = LoadSheddingConfig(default_floor=0.6)
    assert shed_threshold(threshold=0.7, risk=RiskLevel.LOW, task_type="x", queue_depth=2_000,
                          config=with_default)[0] == 0.65
    off = SHEDDING.model_copy(update={"enabled": False})
    assert shed_threshold(threshold=0.8, risk=RiskLevel.LOW, task_type="ticket_classification",
                          queue_depth=2_000, config=off) == (0.8, None)


probabilities = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def shedding_configs(draw: st.DrawFn) -> LoadSheddingConfig:
    return LoadSheddingConfig(
        queue_depth=draw(st.integers(1, 100_000)),
        max_relaxation=draw(st.floats(0.0, 0.1)),
        floors=draw(st.dictionaries(st.sampled_from(["a", "b", "c"]), probabilities,
                                    max_size=3)),
        default_floor=draw(st.none() | probabilities))


@given(threshold=probabilities, risk=st.sampled_from(list(RiskLevel)),
       task_type=st.sampled_from(["a", "b", "c", "d"]),
       depth=st.none() | st.integers(0, 1_000_000), config=shedding_configs())
@example(threshold=1.0, risk=RiskLevel.LOW, task_type="a", depth=2,  # rounding once broke the band
         config=LoadSheddingConfig(queue_depth=1, max_relaxation=0.0859375, floors={"a": 0.0}))
def test_load_shedding_is_bounded(threshold: float, risk: RiskLevel, task_type: str,
                                  depth: int | None, config: LoadSheddingConfig) -> None:
    relaxed, note = shed_threshold(threshold=threshold, risk=risk, task_type=task_type,
                                   queue_depth=depth, config=config)
    assert relaxed <= threshold  # never raises a bar
    if risk is not RiskLevel.LOW:
        assert (relaxed, note) == (threshold, None)  # medium, high, critical: untouched
    if depth is None or depth <= config.queue_depth:
        assert (relaxed, note) == (threshold, None)  # identity under the depth
    assert threshold - relaxed <= config.max_relaxation + 1e-9  # at most the band
    if relaxed < threshold:
        floor = config.floors.get(task_type, config.default_floor)
        assert floor is not None and relaxed >= floor  # never below the certified floor
        assert note is not None and f"-> {relaxed:.2f}" in note


@pytest.mark.parametrize(("section", "field"), [
    ({"max_relaxation": 0.2}, "load_shedding.max_relaxation"),
    ({"queue_depth": 0}, "load_shedding.queue_depth"),
    ({"floors": {"ticket_classification": 1.2}}, "load_shedding.floors.ticket_classification"),
])
def test_a_bad_load_shedding_section_names_its_field(section: dict[str, object],
                                                     field: str) -> None:
    with pytest.raises(PolicyError) as info:
        test_policy(load_shedding=section)
    assert info.value.field == field


# ---------------------------------------------------------------------- adapt

def test_adapt_applies_both_and_says_why_in_the_threshold_source() -> None:
    policy = load_policy()
    request = make_request(task_type="ticket_classification", confidence=0.77)
    base = assess(request, policy, judge_configured=False)
    adapted = adapt(base, task_type=request.task_type, policy=policy,
                    audit_stats={"ticket_classification": _stats(300)}, queue_depth=1_240)
    assert (base.threshold, adapted.threshold) == (0.80, 0.75)
    assert adapted.threshold_source == ("task type ticket_classification; load shedding: "
                                        "queue 1,240 > 1,000, threshold 0.80 -> 0.75")
    assert (base.audit_sample_rate, adapted.audit_sample_rate) == (0.2, 0.075)
    assert adapted.model_copy(update={"threshold": base.threshold,
                                      "threshold_source": base.threshold_source,
                                      "audit_sample_rate": base.audit_sample_rate}) == base


def test_adapt_leaves_a_high_risk_bar_alone_under_load() -> None:
    policy = load_policy()
    request = make_request(task_type="fraud_detection", confidence=0.93)
    base = assess(request, policy, judge_configured=False)
    adapted = adapt(base, task_type=request.task_type, policy=policy, audit_stats={},
                    queue_depth=50_000)
    assert (adapted.threshold, adapted.threshold_source) == (0.95, "task type fraud_detection")
    assert adapted.audit_sample_rate == 0.25  # new task type
