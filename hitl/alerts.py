"""The known ways a HITL system breaks down, detected from its metrics (pure).

Each detector returns an ``Alert`` (code, severity, a message with the
figures, a suggested action) or None. Thresholds default to the literature's
figures: a reviewer approving more than 90% unchanged means the threshold is
too strict; agreement below 85% means the model or the reviewers are wrong;
escalation below 2% with agreement above 99.5% are sunset signals; the review
queue must not grow faster than reviewers work through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from hitl.health import Backlog, Estimate, Rate, ReviewerAgreement, WindowRate

_EPS = 1e-9  # rates are ratios of counts: compare at the boundaries without float noise


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Alert:
    code: str
    severity: Severity
    scope: str  # a task type, or "all"
    message: str
    action: str


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    """When each alert fires. A rate needs ``min_decisions`` / ``min_reviews``
    behind it before it is judged; the sunset needs ``sunset_min_reviews``,
    enough that 99.5% is distinguishable from 99% (one miss in 200)."""

    trend_windows: int = 3
    flat_tolerance: float = 0.01  # a fall smaller than this is "flat"
    escalation_floor: float = 0.02  # below the sunset level a flat rate is fine
    min_decisions: int = 20
    min_reviews: int = 20
    approved_unchanged_max: float = 0.90
    agreement_min: float = 0.85
    kappa_min: float = 0.60  # "substantial" on the Landis-Koch scale
    error_escape_max: float = 0.02
    backlog_ratio: float = 1.0  # arrivals > ratio * reviewed: the queue grows
    min_arrivals: int = 10
    sunset_escalation: float = 0.02
    sunset_agreement: float = 0.995
    sunset_min_reviews: int = 200


DEFAULT_THRESHOLDS = AlertThresholds()


def escalation_not_falling(trend: Sequence[WindowRate], scope: str,
                           t: AlertThresholds = DEFAULT_THRESHOLDS) -> Alert | None:
    """Flat or rising over the last ``trend_windows`` windows that have
    ``min_decisions``: no step falls by more than ``flat_tolerance``."""
    rates = [w.rate.value for w in trend
             if w.rate.value is not None and w.rate.total >= t.min_decisions]
    last = rates[-t.trend_windows:]
    if len(last) < t.trend_windows or last[-1] < t.escalation_floor:
        return None
    steps = zip(last, last[1:], strict=False)
    if any(after < before - t.flat_tolerance - _EPS for before, after in steps):
        return None
    figures = " -> ".join(f"{rate:.1%}" for rate in last)
    return Alert("escalation_not_falling", Severity.WARNING, scope,
                 f"escalation rate is not falling over {len(last)} windows: {figures}",
                 "the model is not learning from reviewer feedback or the thresholds are set "
                 "wrong: audit both (feed corrections into the prompt or training set, "
                 "recalibrate with hitl calibrate)")


def approved_unchanged(agreement: Rate, scope: str,
                       t: AlertThresholds = DEFAULT_THRESHOLDS) -> Alert | None:
    """Reviewers approve more than ``approved_unchanged_max`` of decisions unchanged."""
    if agreement.value is None or agreement.total < t.min_reviews:
        return None
    if agreement.value <= t.approved_unchanged_max + _EPS:
        return None
    return Alert("approved_unchanged", Severity.WARNING, scope,
                 f"reviewers approved {agreement.value:.1%} of the decisions they decided "
                 f"unchanged ({agreement.count}/{agreement.total}), over "
                 f"{t.approved_unchanged_max:.0%}: the threshold is too strict",
                 "lower the confidence threshold for this task type (hitl calibrate certifies "
                 "how far) or move it to sampled audit; people are confirming what the model "
                 "already gets right")


def low_agreement(agreement: Rate, reviewers: ReviewerAgreement, scope: str,
                  t: AlertThresholds = DEFAULT_THRESHOLDS) -> Alert | None:
    """Model-human agreement under ``agreement_min``, diagnosed by inter-reviewer kappa."""
    if agreement.value is None or agreement.total < t.min_reviews:
        return None
    if agreement.value >= t.agreement_min - _EPS:
        return None
    message = (f"reviewers agree with the model on {agreement.value:.1%} of decisions "
               f"({agreement.count}/{agreement.total}), under {t.agreement_min:.0%}; ")
    kappa = reviewers.kappa
    if kappa.value is None:
        message += f"inter-reviewer agreement unknown ({kappa.reason})"
        action = ("have a second reviewer blind-review a sample to tell a wrong model from "
                  "inconsistent reviewers; if they agree with each other, recalibrate")
    elif kappa.value < t.kappa_min:
        message += (f"reviewers are inconsistent with each other (kappa {kappa.value:.2f} on "
                    f"{kappa.n} pairs, under {t.kappa_min:.2f})")
        action = ("clarify the labeling guidelines (what 'correct' means) and retrain "
                  "reviewers before changing thresholds")
    else:
        message += (f"reviewers agree with each other (kappa {kappa.value:.2f} on {kappa.n} "
                    "pairs), so the model is wrong")
        action = ("recalibrate the threshold (hitl calibrate) or retrain the model; check "
                  "that confidence is calibrated")
    return Alert("low_agreement", Severity.CRITICAL, scope, message, action)


def reviewers_inconsistent(agreement: Rate, reviewers: ReviewerAgreement, scope: str,
                           t: AlertThresholds = DEFAULT_THRESHOLDS) -> Alert | None:
    """Inter-reviewer kappa under ``kappa_min`` while model agreement is fine
    (under it, ``low_agreement`` carries the diagnosis)."""
    kappa = reviewers.kappa
    if kappa.value is None or kappa.value >= t.kappa_min - _EPS:
        return None
    if agreement.value is not None and agreement.total >= t.min_reviews and (
            agreement.value < t.agreement_min - _EPS):
        return None
    pairs = reviewers.pair_agreement
    return Alert("reviewers_inconsistent", Severity.WARNING, scope,
                 f"reviewers disagree with each other: kappa {kappa.value:.2f} on {kappa.n} "
                 f"pairs, same verdict on {pairs.count}/{pairs.total}",
                 "labeling guidelines are ambiguous: clarify what 'correct' means and "
                 "retrain reviewers")


def error_escape_high(escape: Estimate, scope: str,
                      t: AlertThresholds = DEFAULT_THRESHOLDS) -> Alert | None:
    """Audited error rate over ``error_escape_max``; critical once the interval's
    lower bound is over it too (the excess is not sampling noise)."""
    if escape.value is None or escape.value <= t.error_escape_max + _EPS:
        return None
    certain = escape.lower is not None and escape.lower > t.error_escape_max
    return Alert("error_escape_high", Severity.CRITICAL if certain else Severity.WARNING, scope,
                 f"{escape.value:.1%} of audited autonomous decisions were wrong "
                 f"({escape.count}/{escape.total}, {escape.confidence:.0%} interval "
                 f"{escape.lower or 0:.1%}-{escape.upper or 0:.1%}), target under "
                 f"{t.error_escape_max:.0%}",
                 "recalibrate the threshold (hitl calibrate) or retrain the model; raise the "
                 "audit sample rate until it is back under target")


def review_bottleneck(backlog: Backlog, scope: str,
                      t: AlertThresholds = DEFAULT_THRESHOLDS) -> Alert | None:
    """More arrivals to queue/escalate than ``backlog_ratio`` times decisive reviews."""
    if backlog.arrivals < t.min_arrivals:
        return None
    if backlog.arrivals <= t.backlog_ratio * backlog.reviewed + _EPS:
        return None
    return Alert("review_bottleneck", Severity.CRITICAL, scope,
                 f"{backlog.arrivals} decisions reached the queue but reviewers decided "
                 f"{backlog.reviewed}; {backlog.waiting} still waiting, {backlog.unreviewed} "
                 "finished without a review (expired or never confirmed): review is the "
                 "bottleneck",
                 "keep the SLA fallback on for reversible outputs; if escalations keep "
                 "outrunning reviewers, recalibrate the thresholds rather than add reviewers")


def sunset(escalation: Rate, agreement: Rate, scope: str,
           t: AlertThresholds = DEFAULT_THRESHOLDS) -> Alert | None:
    """Escalation under ``sunset_escalation`` and agreement over ``sunset_agreement``."""
    if escalation.value is None or escalation.total < t.min_decisions:
        return None
    if agreement.value is None or agreement.total < t.sunset_min_reviews:
        return None
    if escalation.value >= t.sunset_escalation - _EPS:
        return None
    if agreement.value <= t.sunset_agreement + _EPS:
        return None
    return Alert("sunset", Severity.INFO, scope,
                 f"escalation {escalation.value:.1%} ({escalation.count}/{escalation.total}) "
                 f"and reviewers agree with the model on {agreement.value:.2%} "
                 f"({agreement.count}/{agreement.total}): people are barely needed",
                 "consider sunsetting review for this task type: keep it for edge cases and "
                 "move the rest to autonomous with sampled audit")


def detect_alerts(*, scope: str, escalation: Rate, agreement: Rate,
                  reviewers: ReviewerAgreement, escape: Estimate, backlog: Backlog,
                  trend: Sequence[WindowRate],
                  thresholds: AlertThresholds = DEFAULT_THRESHOLDS) -> list[Alert]:
    """Every alert that fires for one scope, most severe first."""
    found = [
        escalation_not_falling(trend, scope, thresholds),
        approved_unchanged(agreement, scope, thresholds),
        low_agreement(agreement, reviewers, scope, thresholds),
        reviewers_inconsistent(agreement, reviewers, scope, thresholds),
        error_escape_high(escape, scope, thresholds),
        review_bottleneck(backlog, scope, thresholds),
        sunset(escalation, agreement, scope, thresholds),
    ]
    order = list(Severity)[::-1]
    return sorted((a for a in found if a is not None), key=lambda a: order.index(a.severity))
