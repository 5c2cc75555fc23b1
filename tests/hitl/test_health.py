"""Health metric formulas against hand-computed and published values."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from scipy.stats import beta

from hitl import health as h
from hitl.calibration import clopper_pearson_upper

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def decision(zone: str | None, *, status: str = "executed", judge: bool = False,
             at: datetime = T0, task_type: str = "t") -> h.DecisionFact:
    return h.DecisionFact(f"d-{zone}-{status}", task_type, zone, status, at, judge_called=judge)


def review(verdict: str = "approve", *, decision_id: str = "d1", reviewer: str = "alice",
           **overrides: Any) -> h.ReviewFact:
    return h.ReviewFact(decision_id=decision_id, task_type="t", reviewer=reviewer,
                        verdict=verdict, reviewed_at=overrides.pop("at", T0), **overrides)


def audit(verdict: str | None, sampled: bool = True) -> h.AuditFact:
    return h.AuditFact("a", "t", sampled, verdict, T0)


# ------------------------------------------------------------------ routing

def test_escalation_and_auto_resolve_rates() -> None:
    # 3 auto + 2 auto_audit + 4 queue + 1 escalate = 10 routed; one never routed is left out.
    zones = ["auto"] * 3 + ["auto_audit"] * 2 + ["queue"] * 4 + ["escalate"] + [None]
    decisions = [decision(z) for z in zones]
    assert h.escalation_rate(decisions) == h.Rate(5, 10, 0.5)
    assert h.auto_resolve_rate(decisions) == h.Rate(5, 10, 0.5)
    assert h.escalation_rate([]) == h.Rate(0, 0, None)


def test_windows_tile_back_from_until_and_trend_counts_per_window() -> None:
    until = T0 + timedelta(days=30)
    windows = h.tile_windows(T0, until, timedelta(days=7))
    # 30 days hold four whole weeks ending at ``until``; the oldest 2 days are dropped.
    assert windows == [(T0 + timedelta(days=2 + 7 * i), T0 + timedelta(days=9 + 7 * i))
                       for i in range(4)]
    assert h.tile_windows(T0, T0 + timedelta(days=3), timedelta(days=7)) == [
        (T0, T0 + timedelta(days=3))]
    two = h.tile_windows(T0, T0 + timedelta(days=2), timedelta(days=1))
    decisions = [decision("queue", at=T0), decision("auto", at=T0 + timedelta(hours=23)),
                 decision("auto", at=T0 + timedelta(days=1)),  # the second window's start
                 decision("queue", at=T0 + timedelta(days=2))]  # == until: outside
    trend = h.escalation_trend(decisions, two)
    assert [w.rate for w in trend] == [h.Rate(1, 2, 0.5), h.Rate(0, 1, 0.0)]


# ------------------------------------------------------------------- safety

def test_error_escape_counts_audited_samples_only() -> None:
    audits = ([audit("approve")] * 38 + [audit("reject")] * 2
              + [audit(None)] * 5 + [audit("reject", sampled=False)])
    escape = h.error_escape_rate(audits)
    assert (escape.count, escape.total, escape.value) == (2, 40, 0.05)
    assert escape.method == "clopper-pearson"
    # Exact two-sided 95%: Beta(0.025; k, n-k+1) and Beta(0.975; k+1, n-k).
    assert escape.lower == pytest.approx(beta.ppf(0.025, 2, 39), rel=1e-12)
    assert escape.upper == pytest.approx(beta.ppf(0.975, 3, 38), rel=1e-12)
    assert escape.upper == clopper_pearson_upper(2, 40, 0.025)
    assert h.error_escape_rate([]).value is None


def test_clopper_pearson_matches_closed_forms_and_newcombe() -> None:
    # k = 0: lower 0, upper solves (1 - p)^n = alpha/2, so 1 - 0.025^(1/n).
    lower, upper, _ = h.binomial_interval(0, 40)
    assert lower == 0.0
    assert upper == pytest.approx(1 - 0.025 ** (1 / 40), rel=1e-10)
    # k = n: upper 1, lower solves p^n = alpha/2.
    lower, upper, _ = h.binomial_interval(40, 40)
    assert (lower, upper) == (pytest.approx(0.025 ** (1 / 40), rel=1e-10), 1.0)
    # Newcombe (1998), Stat. Med. 17:857, Table I, 81/263: exact 0.2527-0.3676.
    lower, upper, method = h.binomial_interval(81, 263)
    assert (round(lower, 4), round(upper, 4), method) == (0.2527, 0.3676, "clopper-pearson")
    assert h.binomial_interval(0, 0) == (None, None, "none")


def test_wilson_interval_without_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # import now raises ImportError
    lower, upper, method = h.binomial_interval(81, 263)
    # Newcombe (1998) Table I, 81/263, Wilson score: 0.2553-0.3662.
    assert (round(lower, 4), round(upper, 4), method) == (0.2553, 0.3662, "wilson")
    assert h.error_escape_rate([audit("reject")] + [audit("approve")] * 9).method == "wilson"
    # At the edges the bound is exactly 0 or 1; the other one is z^2 / (n + z^2).
    z2 = 1.959963984540054 ** 2
    assert h.binomial_interval(0, 5) == (0.0, pytest.approx(z2 / (5 + z2)), "wilson")
    assert h.binomial_interval(5, 5) == (pytest.approx(5 / (5 + z2)), 1.0, "wilson")


# ------------------------------------------------------------------ latency

def test_percentiles_interpolate_between_ranks() -> None:
    # Sorted 10..50: p50 is rank 2 -> 30; p95 is rank 4 * 0.95 = 3.8 -> 40 + 0.8 * 10 = 48.
    values = [50.0, 10.0, 40.0, 20.0, 30.0]
    assert (h.percentile(values, 0.5), h.percentile(values, 0.95)) == (30.0, 48.0)
    assert h.percentile([7.0], 0.95) == 7.0
    assert h.percentile([], 0.5) is None
    data = list(np.random.default_rng(5).exponential(120, size=101))
    assert h.percentile(data, 0.95) == pytest.approx(float(np.percentile(data, 95)))


def test_review_latency_uses_accepted_reviews_with_a_latency() -> None:
    reviews = [review(latency_seconds=s) for s in (10.0, 20.0, 30.0, 40.0, 50.0)]
    reviews += [review(latency_seconds=9999.0, accepted=False, refusal="no role"),
                review(latency_seconds=None)]
    assert h.review_latency(reviews) == h.Latency(30.0, 48.0, 5)


# ---------------------------------------------------------- decisive reviews

def test_decisive_review_single_approval_skips_refusals() -> None:
    marked = h.mark_decisive([review(accepted=False, refusal="alice may not decide high"),
                              review(reviewer="bob")], 1)
    assert [r.decisive for r in marked] == [False, True]


def test_decisive_review_four_eyes_keeps_the_first_approvers_edit() -> None:
    marked = h.mark_decisive([review(edited=True), review(reviewer="bob"),
                              review("reject", reviewer="carol", accepted=False,
                                     refusal="decision d1 is already decided (executed)")], 2)
    assert [r.decisive for r in marked] == [False, True, False]
    assert marked[1].outcome_edited  # bob approved alice's edit: the model was corrected


def test_decisive_review_reject_vetoes_and_unrecorded_decisions_wait() -> None:
    vetoed = h.mark_decisive([review(), review("reject", reviewer="bob")], 2)
    assert [r.decisive for r in vetoed] == [False, True]
    # No decision record: the approval may be the first of two, so it is not decisive yet.
    assert not h.mark_decisive([review()], None)[0].decisive
    assert h.mark_decisive([review(), review("reject", reviewer="bob")], None)[1].decisive


def test_model_agreement_counts_unchanged_approvals_among_decisive() -> None:
    # 6 unchanged approvals, 2 edited approvals, 2 rejects: agreement 6 / 10.
    reviews = ([review(decisive=True)] * 6 + [review(decisive=True, outcome_edited=True)] * 2
               + [review("reject", decisive=True)] * 2 + [review()] * 5)
    assert h.model_agreement(reviews) == h.Rate(6, 10, 0.6)


# ------------------------------------------------------- between reviewers

def test_opinions_take_each_reviewers_first_verdict_and_already_decided_refusals() -> None:
    reviews = [review(reviewer="alice"),
               review("reject", reviewer="alice"),  # alice again: not a second opinion
               review("reject", reviewer="bob", accepted=False,
                      refusal="decision d1 is already decided (executed)"),
               review(reviewer="mallory", accepted=False, refusal="mallory is not a reviewer"),
               review("reject", decision_id="d2", reviewer="carol")]
    assert h.opinions(reviews) == {"d1": ["approve", "reject"], "d2": ["reject"]}


def test_cohen_kappa_textbook_example() -> None:
    # 50 pairs: yes/yes 20, yes/no 5, no/yes 10, no/no 15. p_o = 35/50 = 0.7.
    # First says yes 25/50, second 30/50: p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5.
    # kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    pairs = ([("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15)
    assert h.cohen_kappa(pairs) == h.Statistic(pytest.approx(0.4), 50)


def test_cohen_kappa_small_table_and_its_limits() -> None:
    # 10 pairs: A/A 6, R/R 2, A/R 1, R/A 1. p_o = 0.8; both say A 7 times:
    # p_e = 0.7^2 + 0.3^2 = 0.58; kappa = 0.22 / 0.42 = 0.5238.
    pairs = [("a", "a")] * 6 + [("r", "r")] * 2 + [("a", "r"), ("r", "a")]
    assert h.cohen_kappa(pairs).value == pytest.approx(0.22 / 0.42)
    assert h.cohen_kappa(pairs[:9]) == h.Statistic(None, 9, "only 9 reviewer pairs, need 10")
    same = h.cohen_kappa([("a", "a")] * 12)
    assert same.value is None and "undefined" in (same.reason or "")


def test_krippendorff_alpha_on_the_same_table() -> None:
    # Ten decisions of two ratings, as above. n = 20 ratings: 14 A, 6 R.
    # Disagreeing ordered pairs: 2 decisions x (4 - 2) / 1 = 4.
    # D_e = 14 * 6 + 6 * 14 = 168; alpha = 1 - 19 * 4 / 168 = 0.5476.
    units = [["a", "a"]] * 6 + [["r", "r"]] * 2 + [["a", "r"], ["r", "a"]]
    assert h.krippendorff_alpha(units) == h.Statistic(pytest.approx(1 - 76 / 168), 10)
    assert h.krippendorff_alpha(units[:9] + [["a"]]).value is None  # a single rating is no unit


def test_krippendorff_alpha_published_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C:
    # four coders, twelve units, missing values, nominal alpha = 0.743.
    columns = ["111", "2232", "3333", "3333", "2222", "1234", "4444", "1121", "2222", "555",
               "11", "3"]
    assert round(h.krippendorff_alpha([list(c) for c in columns]).value or 0, 3) == 0.743


def test_reviewer_agreement_pairs_first_two_opinions() -> None:
    reviews = []
    for i in range(10):
        second = "reject" if i < 2 else "approve"
        reviews += [review(decision_id=f"d{i}", reviewer="alice"),
                    review(second, decision_id=f"d{i}", reviewer="bob",
                           accepted=False, refusal=f"decision d{i} is already decided (x)"),
                    review("reject", decision_id=f"d{i}", reviewer="carol")]
    agreement = h.reviewer_agreement(reviews)
    assert agreement.pair_agreement == h.Rate(8, 10, 0.8)
    # Pairs: 8 A/A, 2 A/R. First always A, so p_e = p(second = A) = 0.8 = p_o: kappa 0.
    assert agreement.kappa == h.Statistic(pytest.approx(0.0), 10)
    # Alpha uses all three opinions: 10 decisions, 30 ratings, 18 A and 12 R.
    # Per decision A,A,R (8x): 9 - 5 = 4 disagreeing pairs / 2 = 2; A,R,R (2x): 2 each.
    # alpha = 1 - 29 * 20 / (2 * 18 * 12) = 1 - 580 / 432 = -0.3426.
    assert agreement.alpha.value == pytest.approx(1 - 580 / 432)


# ----------------------------------------------------------------- feedback

def test_feedback_utilization_counts_structured_corrections() -> None:
    reviews = [review("reject", correct_answer="deny", error_category="other"),
               review("reject", error_category="other"),
               review(edited=True),
               review("reject", error_category="hallucination", correct_answer=" "),
               review(),  # unchanged approval: nothing to learn
               review("reject", error_category="tone", accepted=False, refusal="no role")]
    now = T0 + timedelta(days=45)
    fb = h.feedback_utilization(reviews, now=now)
    # Corrections 4; answers: "deny" and the edit; categories: hallucination only.
    assert (fb.corrections, fb.with_answer, fb.with_category) == (4, 2, 1)
    assert fb.structured == h.Rate(3, 4, 0.75)
    assert (fb.last_recalibration, fb.days_since_recalibration, fb.used_share) == (
        None, None, None)
    used = h.feedback_utilization(reviews, now=now, last_recalibration=T0, reviews_used=2)
    assert used.days_since_recalibration == 45.0
    assert used.used_share == pytest.approx(2 / 3)


# --------------------------------------------------------------------- cost

def test_cost_per_decision_with_default_and_custom_unit_costs() -> None:
    decisions = [decision("auto", judge=i < 6) for i in range(10)]
    reviews = [review()] * 3 + [review(accepted=False, refusal="no role")]
    cost = h.decision_cost(decisions, reviews)
    # 10 * $0 + 6 judge calls * $0.005 + 3 reviews * $1.00 = $3.03, $0.303 per decision.
    assert (cost.judge_calls, cost.human_reviews) == (6, 3)
    assert cost.total == pytest.approx(3.03)
    assert cost.per_decision == pytest.approx(0.303)
    assert cost.human_share == pytest.approx(3 / 3.03)
    custom = h.decision_cost(decisions, reviews, h.UnitCosts(rule=0.001, judge=0.01, human=2))
    # 10 * 0.001 + 6 * 0.01 + 3 * 2 = 6.07.
    assert custom.total == pytest.approx(6.07)
    empty = h.decision_cost([], [])
    assert (empty.total, empty.per_decision, empty.human_share) == (0.0, None, None)


def test_backlog_counts_arrivals_decisive_reviews_waiting_and_unreviewed() -> None:
    decisions = ([decision("queue")] * 5 + [decision("escalate", status="expired")] * 2
                 + [decision("queue", status="provisional")] + [decision("auto")] * 4)
    decisions = [h.DecisionFact(f"d{i}", d.task_type, d.zone, d.status, d.submitted_at)
                 for i, d in enumerate(decisions)]
    # The queue table holds d0-d1 (finished, also recorded) and w0-w2 (still waiting).
    queue = ([h.QueueFact(f"d{i}", "t", T0, waiting=False) for i in range(2)]
             + [h.QueueFact(f"w{i}", "t", T0, waiting=True) for i in range(3)])
    reviews = [review(decisive=True)] * 4 + [review()] * 3
    # Arrivals by ID: d0-d7 (8 routed to a person) + w0-w2 = 11.
    assert h.backlog(decisions, reviews, queue) == h.Backlog(
        arrivals=11, reviewed=4, waiting=3, unreviewed=3)
    assert h.backlog(decisions, reviews).arrivals == 8
