"""Anti-pattern alerts fire past their thresholds and stay quiet at them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hitl import alerts as a
from hitl.alerts import AlertThresholds, Severity
from hitl.health import Backlog, Estimate, Rate, ReviewerAgreement, Statistic, WindowRate

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def trend(*counts: tuple[int, int]) -> list[WindowRate]:
    return [WindowRate(T0 + timedelta(days=7 * i), T0 + timedelta(days=7 * i + 7),
                       Rate.of(count, total)) for i, (count, total) in enumerate(counts)]


def kappa(value: float | None, n: int = 30) -> ReviewerAgreement:
    reason = None if value is not None else f"only {n} reviewer pairs, need 10"
    return ReviewerAgreement(Statistic(value, n, reason), Statistic(value, n, reason),
                             Rate.of(n // 2, n))


def escape(count: int, total: int, lower: float, upper: float) -> Estimate:
    return Estimate(count, total, count / total, lower, upper, 0.95, "clopper-pearson")


# ------------------------------------------------------- escalation trend

def test_escalation_flat_or_rising_over_three_windows_fires() -> None:
    alert = a.escalation_not_falling(trend((30, 100), (30, 100), (31, 100)), "t")
    assert alert is not None and alert.code == "escalation_not_falling"
    assert alert.severity is Severity.WARNING
    assert "30.0% -> 30.0% -> 31.0%" in alert.message


def test_escalation_trend_boundaries() -> None:
    # A fall of exactly the 1-point tolerance is still flat; one more decision is falling.
    assert a.escalation_not_falling(trend((30, 100), (29, 100), (28, 100)), "t") is not None
    assert a.escalation_not_falling(trend((30, 100), (29, 100), (27, 100)), "t") is None
    # Only the last three windows count: an old fall does not hide a recent plateau.
    assert a.escalation_not_falling(trend((50, 100), (30, 100), (30, 100), (30, 100)),
                                    "t") is not None
    # Two windows are not a trend; a thin window (< 20 decisions) is skipped.
    assert a.escalation_not_falling(trend((30, 100), (30, 100)), "t") is None
    assert a.escalation_not_falling(trend((30, 100), (6, 19), (30, 100)), "t") is None
    assert a.escalation_not_falling(trend((30, 100), (6, 20), (30, 100)), "t") is not None
    # Already under the 2% floor: flat is where it should be.
    assert a.escalation_not_falling(trend((1, 100), (1, 100), (1, 100)), "t") is None
    assert a.escalation_not_falling(trend((2, 100), (2, 100), (2, 100)), "t") is not None
    looser = AlertThresholds(trend_windows=2)
    assert a.escalation_not_falling(trend((30, 100), (30, 100)), "t", looser) is not None


# ------------------------------------------------------ approved unchanged

def test_approved_unchanged_fires_over_ninety_percent() -> None:
    alert = a.approved_unchanged(Rate.of(91, 100), "t")
    assert alert is not None and "91.0%" in alert.message and "(91/100)" in alert.message
    assert a.approved_unchanged(Rate.of(90, 100), "t") is None  # exactly 90%: quiet
    assert a.approved_unchanged(Rate.of(19, 19), "t") is None  # too few reviews
    assert a.approved_unchanged(Rate.of(20, 20), "t") is not None


# ------------------------------------------------------------ low agreement

@pytest.mark.parametrize(("reviewers", "diagnosis", "action"), [
    (kappa(0.41), "inconsistent with each other (kappa 0.41 on 30 pairs", "guidelines"),
    (kappa(0.80), "agree with each other (kappa 0.80 on 30 pairs), so the model is wrong",
     "recalibrate"),
    (kappa(None, 4), "unknown (only 4 reviewer pairs, need 10)", "blind-review"),
])
def test_low_agreement_diagnoses_model_or_reviewers(reviewers: ReviewerAgreement,
                                                    diagnosis: str, action: str) -> None:
    alert = a.low_agreement(Rate.of(16, 20), reviewers, "t")
    assert alert is not None and alert.severity is Severity.CRITICAL
    assert "80.0% of decisions (16/20), under 85%" in alert.message
    assert diagnosis in alert.message and action in alert.action


def test_low_agreement_boundaries() -> None:
    assert a.low_agreement(Rate.of(17, 20), kappa(0.8), "t") is None  # exactly 85%
    assert a.low_agreement(Rate.of(84, 100), kappa(0.8), "t") is not None
    assert a.low_agreement(Rate.of(0, 19), kappa(0.8), "t") is None  # too few reviews
    # Kappa exactly at 0.60 is consistent reviewers: the model is blamed.
    alert = a.low_agreement(Rate.of(16, 20), kappa(0.60), "t")
    assert alert is not None and "model is wrong" in alert.message


def test_reviewers_inconsistent_alone_when_model_agreement_is_fine() -> None:
    alert = a.reviewers_inconsistent(Rate.of(18, 20), kappa(0.59), "t")
    assert alert is not None and "kappa 0.59 on 30 pairs, same verdict on 15/30" in alert.message
    assert a.reviewers_inconsistent(Rate.of(18, 20), kappa(0.60), "t") is None
    assert a.reviewers_inconsistent(Rate.of(18, 20), kappa(None), "t") is None
    # Under 85% the low_agreement alert carries the diagnosis instead.
    assert a.reviewers_inconsistent(Rate.of(16, 20), kappa(0.2), "t") is None


# ------------------------------------------------------------- error escape

def test_error_escape_warning_then_critical_when_the_interval_clears_target() -> None:
    assert a.error_escape_high(escape(2, 100, 0.002, 0.07), "t") is None  # exactly 2%
    warning = a.error_escape_high(escape(3, 100, 0.006, 0.085), "t")
    assert warning is not None and warning.severity is Severity.WARNING
    assert "3.0% of audited" in warning.message and "0.6%-8.5%" in warning.message
    critical = a.error_escape_high(escape(30, 300, 0.069, 0.14), "t")
    assert critical is not None and critical.severity is Severity.CRITICAL
    empty = Estimate(0, 0, None, None, None, 0.95, "none")
    assert a.error_escape_high(empty, "t") is None


# --------------------------------------------------------------- bottleneck

def test_review_bottleneck_when_arrivals_outrun_reviews() -> None:
    alert = a.review_bottleneck(Backlog(arrivals=25, reviewed=20, waiting=3, unreviewed=2), "t")
    assert alert is not None and alert.severity is Severity.CRITICAL
    assert "reviewers decided 20; 3 still waiting, 2 finished" in alert.message
    assert a.review_bottleneck(Backlog(20, 20, 0, 0), "t") is None  # keeping pace
    assert a.review_bottleneck(Backlog(9, 0, 0, 9), "t") is None  # too few to judge
    assert a.review_bottleneck(Backlog(10, 9, 1, 0), "t") is not None
    looser = AlertThresholds(backlog_ratio=1.2)
    assert a.review_bottleneck(Backlog(12, 10, 2, 0), "t", looser) is None


# ------------------------------------------------------------------ sunset

def test_sunset_needs_low_escalation_and_near_total_agreement() -> None:
    alert = a.sunset(Rate.of(15, 1000), Rate.of(299, 300), "t")
    assert alert is not None and alert.severity is Severity.INFO
    assert "escalation 1.5% (15/1000)" in alert.message and "99.67% (299/300)" in alert.message
    assert a.sunset(Rate.of(20, 1000), Rate.of(299, 300), "t") is None  # exactly 2%
    assert a.sunset(Rate.of(15, 1000), Rate.of(199, 200), "t") is None  # exactly 99.5%
    assert a.sunset(Rate.of(15, 1000), Rate.of(199, 199), "t") is None  # under 200 reviews
    assert a.sunset(Rate.of(0, 19), Rate.of(300, 300), "t") is None  # too few decisions


def test_detect_alerts_orders_by_severity_and_scopes() -> None:
    found = a.detect_alerts(
        scope="refund_request", escalation=Rate.of(30, 100), agreement=Rate.of(10, 20),
        reviewers=kappa(0.1), escape=escape(1, 10, 0.0025, 0.445),
        backlog=Backlog(24, 20, 0, 4), trend=trend((30, 100), (30, 100), (30, 100)))
    assert [(x.code, x.severity.value) for x in found] == [
        ("low_agreement", "critical"), ("review_bottleneck", "critical"),
        ("escalation_not_falling", "warning"), ("error_escape_high", "warning")]
    assert {x.scope for x in found} == {"refund_request"}
    quiet = a.detect_alerts(
        scope="t", escalation=Rate.of(20, 100), agreement=Rate.of(17, 20),
        reviewers=kappa(0.7), escape=escape(1, 100, 0.0003, 0.054),
        backlog=Backlog(20, 20, 0, 0), trend=trend((30, 100), (25, 100), (20, 100)))
    assert quiet == []
