"""Health metrics of a HITL system: pure formulas over plain records.

No database and no Temporal: ``hitl.health_store`` turns the store's tables
into the records below, ``hitl.alerts`` reads the metrics, ``hitl metrics``
prints them. Each function's docstring gives its formula and the target from
the literature (the HITL architecture article's metrics table: escalation
15-30%, auto-resolve 70-85%, error escape < 2%, review latency p95 < 5 min,
reviewer agreement > 85%, feedback used on a monthly cycle; costs from its
cascading-validation economics).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from statistics import NormalDist

REVIEW_ZONES = ("queue", "escalate")
AUTO_ZONES = ("auto", "auto_audit")
MIN_PAIRS = 10
"""Fewer reviewer pairs (or units) than this and kappa/alpha are reported as None."""


@dataclass(frozen=True, slots=True)
class DecisionFact:
    """A finished decision (the store writes ``decisions`` when the workflow ends)."""

    decision_id: str
    task_type: str
    zone: str | None
    status: str
    submitted_at: datetime
    judge_called: bool = False


@dataclass(frozen=True, slots=True)
class ReviewFact:
    """One reviewer action, accepted or refused, in the order received.

    ``decisive`` marks the review that set the decision's verdict (see
    ``mark_decisive``); ``outcome_edited`` is meaningful on that review only.
    """

    decision_id: str
    task_type: str
    reviewer: str
    verdict: str
    reviewed_at: datetime
    accepted: bool = True
    refusal: str | None = None
    edited: bool = False
    correct_answer: str | None = None
    error_category: str | None = None
    latency_seconds: float | None = None
    decisive: bool = False
    outcome_edited: bool = False


@dataclass(frozen=True, slots=True)
class AuditFact:
    """An AUTO_AUDIT decision; ``verdict`` is the auditor's, None until audited."""

    decision_id: str
    task_type: str
    sampled: bool
    verdict: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class QueueFact:
    """A decision that entered the review gate (the ``review_queue`` table)."""

    decision_id: str
    task_type: str
    escalated_at: datetime
    waiting: bool


@dataclass(frozen=True, slots=True)
class Rate:
    count: int
    total: int
    value: float | None

    @classmethod
    def of(cls, count: int, total: int) -> Rate:
        return cls(count, total, count / total if total else None)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A proportion with a two-sided confidence interval and the method used."""

    count: int
    total: int
    value: float | None
    lower: float | None
    upper: float | None
    confidence: float
    method: str


@dataclass(frozen=True, slots=True)
class Latency:
    p50: float | None
    p95: float | None
    n: int


@dataclass(frozen=True, slots=True)
class Statistic:
    """A chance-corrected agreement, or None with the reason it cannot be computed."""

    value: float | None
    n: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ReviewerAgreement:
    kappa: Statistic  # n = pairs
    alpha: Statistic  # n = decisions with >= 2 ratings
    pair_agreement: Rate  # raw share of pairs with the same verdict


@dataclass(frozen=True, slots=True)
class Feedback:
    corrections: int  # accepted rejects and edited approvals
    with_answer: int  # a correct answer or an edit (the edit is the answer)
    with_category: int  # an error category other than the default "other"
    structured: Rate  # corrections with an answer or a specific category
    last_recalibration: datetime | None
    days_since_recalibration: float | None
    used_share: float | None  # reviews used in the last recalibration / structured


@dataclass(frozen=True, slots=True)
class UnitCosts:
    """Per-call costs; defaults from the cascading-validation economics:
    rules $0, LLM judge $0.002-0.01 (0.005), human review $0.50-2.00 (1.00)."""

    rule: float = 0.0
    judge: float = 0.005
    human: float = 1.0


@dataclass(frozen=True, slots=True)
class Cost:
    decisions: int
    judge_calls: int
    human_reviews: int
    total: float
    per_decision: float | None
    human_share: float | None


@dataclass(frozen=True, slots=True)
class Backlog:
    arrivals: int  # decisions that entered the review gate (queue/escalate)
    reviewed: int  # decisive accepted reviews
    waiting: int  # of the arrivals, still waiting for a person now
    unreviewed: int  # routed to a person, finished without one (expired, never confirmed)


@dataclass(frozen=True, slots=True)
class WindowRate:
    since: datetime
    until: datetime
    rate: Rate


# ----------------------------------------------------------------- routing

def escalation_rate(decisions: Iterable[DecisionFact]) -> Rate:
    """(queue + escalate) / routed decisions. Target 15-30%, domain-dependent.

    Rising: the model degrades or the threshold is too strict; falling: the
    model improves or the threshold is too lenient. Decisions that never got a
    zone (the cascade failed before routing) are left out of both sides, so
    escalation + auto-resolve = 1.
    """
    routed = [d for d in decisions if d.zone is not None]
    return Rate.of(sum(d.zone in REVIEW_ZONES for d in routed), len(routed))


def auto_resolve_rate(decisions: Iterable[DecisionFact]) -> Rate:
    """(auto + auto_audit) / routed decisions. Target 70-85%."""
    routed = [d for d in decisions if d.zone is not None]
    return Rate.of(sum(d.zone in AUTO_ZONES for d in routed), len(routed))


def escalation_trend(decisions: Sequence[DecisionFact],
                     windows: Sequence[tuple[datetime, datetime]]) -> list[WindowRate]:
    """The escalation rate per window (``since <= submitted_at < until``)."""
    return [WindowRate(since, until, escalation_rate(
        d for d in decisions if since <= d.submitted_at < until)) for since, until in windows]


def tile_windows(since: datetime, until: datetime,
                 length: timedelta) -> list[tuple[datetime, datetime]]:
    """Whole windows of ``length`` ending at ``until``, oldest first; a range
    shorter than one window is one window."""
    windows = []
    end = until
    while end - length >= since:
        windows.append((end - length, end))
        end -= length
    return windows[::-1] or [(since, until)]


# ------------------------------------------------------------------ safety

def error_escape_rate(audits: Iterable[AuditFact], confidence: float = 0.95) -> Estimate:
    """Rejected audits / audited samples, with an exact interval. Target < 2%.

    Counts sampled AUTO_AUDIT decisions that carry an auditor's verdict;
    "reject" means an error escaped. It estimates the error among audited
    (high-risk, confident) autonomous decisions; AUTO decisions are not
    sampled, so it says nothing about them. Samples are unweighted: mixing
    task types with different sample rates weights them by sample rate.
    """
    verdicts = [a.verdict for a in audits if a.sampled and a.verdict is not None]
    errors, n = sum(v == "reject" for v in verdicts), len(verdicts)
    lower, upper, method = binomial_interval(errors, n, confidence)
    return Estimate(errors, n, errors / n if n else None, lower, upper, confidence, method)


def binomial_interval(k: int, n: int, confidence: float = 0.95
                      ) -> tuple[float | None, float | None, str]:
    """Two-sided interval for k/n: exact Clopper-Pearson, Wilson without scipy.

    Clopper-Pearson: lower = Beta(alpha/2; k, n-k+1) (0 when k = 0), upper =
    Beta(1-alpha/2; k+1, n-k) (1 when k = n), the upper being
    ``hitl.calibration.clopper_pearson_upper`` at alpha/2. Its coverage is at
    least ``confidence``. Wilson (the fallback) is approximate.
    """
    if n == 0:
        return None, None, "none"
    alpha = 1.0 - confidence
    try:
        from scipy.stats import beta

        from hitl.calibration import clopper_pearson_upper
    except ImportError:
        z = NormalDist().inv_cdf(1.0 - alpha / 2)
        p, denominator = k / n, 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / denominator
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
        # Exactly 0 at k = 0 and 1 at k = n; the subtraction leaves float dust there.
        return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half), "wilson"
    lower = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    return lower, clopper_pearson_upper(k, n, alpha / 2), "clopper-pearson"


# ----------------------------------------------------------------- reviews

def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default): the value at
    rank (n - 1) * q of the sorted values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def review_latency(reviews: Iterable[ReviewFact]) -> Latency:
    """p50 and p95 of accepted reviews' latency (escalation to review). Target p95 < 5 min."""
    values = [r.latency_seconds for r in reviews if r.accepted and r.latency_seconds is not None]
    return Latency(percentile(values, 0.5), percentile(values, 0.95), len(values))


def mark_decisive(reviews: Sequence[ReviewFact], approvals_required: int | None
                  ) -> list[ReviewFact]:
    """Flag the review that set one decision's verdict; ``reviews`` in the order received.

    The first accepted reject vetoes; otherwise the accepted approval that
    reaches ``approvals_required`` (2 on a four-eyes decision) decides. With
    ``approvals_required`` None (the decision has no record yet, so it may be
    waiting for a second approver) only a reject can be decisive.
    ``outcome_edited`` says whether any accepted approval up to it edited.
    """
    marked, approvals, edited = list(reviews), 0, False
    for i, review in enumerate(marked):
        if not review.accepted:
            continue
        if review.verdict != "reject":
            approvals += 1
            edited = edited or review.edited
            if approvals_required is None or approvals < approvals_required:
                continue
        marked[i] = replace(review, decisive=True, outcome_edited=edited)
        break
    return marked


def model_agreement(reviews: Iterable[ReviewFact]) -> Rate:
    """Decisions approved unchanged / decisions a person decided. Target > 85%.

    One count per decision (its decisive review): approved with no edit by any
    approver agrees with the model; an edit or a reject disagrees. The same
    share is "approved unchanged" (> 90%: threshold too strict) and the sunset
    signal (> 99.5%).
    """
    decisive = [r for r in reviews if r.decisive]
    return Rate.of(sum(r.verdict == "approve" and not r.outcome_edited for r in decisive),
                   len(decisive))


def opinions(reviews: Iterable[ReviewFact]) -> dict[str, list[str]]:
    """Each decision's verdicts, one per distinct reviewer (their first), in order.

    Accepted reviews count, and so do reviews refused as "already decided":
    that reviewer judged the case independently, after someone else decided.
    Other refusals (no role, approving one's own request) are not opinions
    that count.
    """
    seen: dict[str, set[str]] = {}
    verdicts: dict[str, list[str]] = {}
    for review in reviews:
        if not (review.accepted or "already decided" in (review.refusal or "")):
            continue
        reviewers = seen.setdefault(review.decision_id, set())
        if review.reviewer not in reviewers:
            reviewers.add(review.reviewer)
            verdicts.setdefault(review.decision_id, []).append(review.verdict)
    return verdicts


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> Statistic:
    """(p_o - p_e) / (1 - p_e) over (first, second) verdict pairs.

    p_o = share of pairs that agree; p_e = sum over verdicts c of
    P(first = c) * P(second = c). None below ``MIN_PAIRS`` pairs, and when every
    verdict is the same (p_e = 1: no disagreement is possible to correct for).
    """
    n = len(pairs)
    if n < MIN_PAIRS:
        return Statistic(None, n, f"only {n} reviewer pairs, need {MIN_PAIRS}")
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[c] * second[c] for c in first) / (n * n)
    if expected >= 1.0:
        return Statistic(None, n, f"every verdict is {pairs[0][0]!r}: kappa is undefined")
    return Statistic((observed - expected) / (1.0 - expected), n)


def krippendorff_alpha(units: Iterable[Sequence[str]]) -> Statistic:
    """Nominal alpha = 1 - (n - 1) * D_o / D_e over decisions with >= 2 ratings.

    D_o = sum over decisions u of (m_u^2 - sum_c n_uc^2) / (m_u - 1) (the
    disagreeing ordered pairs, each decision weighted 1 / (m_u - 1)); D_e =
    sum_c n_c * (n - n_c) with n_c the verdict totals and n all ratings.
    Unlike kappa it takes any number of reviewers per decision. ``n`` in the
    result counts decisions.
    """
    pairable = [list(u) for u in units if len(u) >= 2]
    if len(pairable) < MIN_PAIRS:
        return Statistic(None, len(pairable),
                         f"only {len(pairable)} decisions with two ratings, need {MIN_PAIRS}")
    totals = Counter(v for u in pairable for v in u)
    n = sum(totals.values())
    expected = sum(c * (n - c) for c in totals.values())
    if expected == 0:
        return Statistic(None, len(pairable),
                         f"every verdict is {pairable[0][0]!r}: alpha is undefined")
    observed = sum((len(u) ** 2 - sum(c * c for c in Counter(u).values())) / (len(u) - 1)
                   for u in pairable)
    return Statistic(1.0 - (n - 1) * observed / expected, len(pairable))


def reviewer_agreement(reviews: Iterable[ReviewFact]) -> ReviewerAgreement:
    """Agreement between reviewers: Cohen's kappa on each decision's first two
    verdicts by distinct reviewers, Krippendorff's alpha on all of them."""
    units = list(opinions(reviews).values())
    pairs = [(u[0], u[1]) for u in units if len(u) >= 2]
    return ReviewerAgreement(cohen_kappa(pairs), krippendorff_alpha(units),
                             Rate.of(sum(a == b for a, b in pairs), len(pairs)))


# ---------------------------------------------------------------- feedback

def feedback_utilization(reviews: Iterable[ReviewFact], *, now: datetime,
                         last_recalibration: datetime | None = None,
                         reviews_used: int | None = None) -> Feedback:
    """Structured corrections / corrections, and how recently they were used.

    Corrections are accepted rejects and edited approvals (an unchanged approval
    has nothing to teach). Structured: a correct answer (an edit is one) or an
    error category more specific than "other", the reject's default. Used:
    ``reviews_used`` / structured corrections, and the days since the last
    recalibration; no recalibration is recorded yet, so callers pass None and
    it reads "never". Target: a monthly cycle.
    """
    corrections = [r for r in reviews if r.accepted and (r.verdict == "reject" or r.edited)]
    answer = [bool((r.correct_answer or "").strip()) or r.edited for r in corrections]
    category = [r.error_category not in (None, "", "other") for r in corrections]
    structured = sum(a or c for a, c in zip(answer, category, strict=True))
    days = (None if last_recalibration is None
            else (now - last_recalibration).total_seconds() / 86400)
    used = (reviews_used / structured
            if reviews_used is not None and last_recalibration is not None and structured
            else None)
    return Feedback(len(corrections), sum(answer), sum(category),
                    Rate.of(structured, len(corrections)), last_recalibration, days, used)


# -------------------------------------------------------------------- cost

def decision_cost(decisions: Sequence[DecisionFact], reviews: Iterable[ReviewFact],
                  costs: UnitCosts | None = None) -> Cost:
    """(decisions * rule + judge calls * judge + accepted reviews * human) / decisions.

    Judge calls: decisions whose judge ran (status not "skipped"; an error after
    retries still cost a call). Human reviews: every accepted review in the
    window, so a four-eyes decision costs two.
    """
    costs = costs or UnitCosts()
    judge_calls = sum(d.judge_called for d in decisions)
    humans = sum(r.accepted for r in reviews)
    human = humans * costs.human
    total = len(decisions) * costs.rule + judge_calls * costs.judge + human
    return Cost(len(decisions), judge_calls, humans, total,
                total / len(decisions) if decisions else None, human / total if total else None)


def backlog(decisions: Iterable[DecisionFact], reviews: Iterable[ReviewFact],
            queue: Iterable[QueueFact] = ()) -> Backlog:
    """Arrivals at the review gate against decisive reviews in the same window.

    Arrivals are the decisions that entered the gate: the ``review_queue`` rows
    (written on entry, so waiting ones count) together with finished decisions
    routed to queue/escalate, by ID, so decisions recorded before the queue
    table existed still count. The queue grows when arrivals outnumber reviews;
    ``waiting`` and ``unreviewed`` (expired, or delivered provisionally and
    never confirmed) are where the excess went.
    """
    routed = [d for d in decisions if d.zone in REVIEW_ZONES]
    entries = list(queue)
    arrivals = {d.decision_id for d in routed} | {q.decision_id for q in entries}
    return Backlog(len(arrivals), sum(r.decisive for r in reviews),
                   sum(q.waiting for q in entries),
                   sum(d.status in ("expired", "provisional") for d in routed))
