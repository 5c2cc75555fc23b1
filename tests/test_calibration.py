"""Certified thresholds: exact bounds, the properties the guarantee rests on, and
a resampling check that the guarantee holds where the naive rule does not."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy.stats import binom

from hitl.calibration import (
    LabeledDecision,
    brier_score,
    certify_by_outcome,
    certify_by_task_type,
    certify_threshold,
    clopper_pearson_upper,
    expected_calibration_error,
    min_autonomous_needed,
    naive_threshold,
    plan_starts,
    reliability_table,
)
from hitl.cli_calibrate import build_report, load_labeled, render_report, run_calibrate
from hitl.errors import InputError

FAST = settings(max_examples=60, deadline=None)


def brute_force_upper(errors: int, n: int, delta: float) -> float:
    """The p solving P(Bin(n, p) <= errors) = delta, by bisection on the binomial cdf."""
    if errors >= n:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if binom.cdf(errors, n, mid) > delta else (lo, mid)
    return (lo + hi) / 2


def fixed_sequence_reference(
    conf: list[float], ok: list[bool], max_error: float, delta: float
) -> float | None:
    """The textbook procedure, written out plainly: distinct confidences from the
    top, skip those with too few decisions to pass, stop at the first failure."""
    result = None
    for t in sorted(set(conf), reverse=True):
        inside = [good for c, good in zip(conf, ok, strict=True) if c >= t]
        if (1 - max_error) ** len(inside) > delta:  # could not pass even with no errors
            continue
        if clopper_pearson_upper(inside.count(False), len(inside), delta) > max_error:
            break
        result = t
    return result


def strictness(threshold: float | None) -> float:
    return math.inf if threshold is None else threshold


labeled = st.lists(
    st.tuples(st.integers(0, 40).map(lambda k: 0.6 + k / 100), st.booleans().map(lambda b: b)),
    min_size=0, max_size=400,
).map(lambda rows: ([c for c, _ in rows], [ok for _, ok in rows]))


@st.composite
def model_outputs(draw: st.DrawFn, max_n: int = 2000) -> tuple[list[float], list[bool]]:
    """Data that can certify: errors rarer at high confidence, optionally rounded (ties)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(150, max_n))
    conf = rng.beta(8, 1.5, n)
    if draw(st.booleans()):
        conf = np.round(conf, 2)
    wrong = rng.random(n) < draw(st.sampled_from([0.03, 0.1, 0.3])) * (1 - conf)
    return [float(c) for c in conf], [not w for w in wrong]


# --- Clopper-Pearson -----------------------------------------------------------------------------

@FAST
@given(st.integers(1, 3000), st.data(), st.sampled_from([0.001, 0.01, 0.05, 0.1, 0.3]))
def test_bound_matches_brute_force(n: int, data: st.DataObject, delta: float) -> None:
    errors = data.draw(st.integers(0, n))
    assert clopper_pearson_upper(errors, n, delta) == pytest.approx(
        brute_force_upper(errors, n, delta), abs=1e-9)


def test_zero_errors_need_149_at_two_percent() -> None:
    assert min_autonomous_needed(0.02, 0.05) == 149
    assert clopper_pearson_upper(0, 148, 0.05) > 0.02 >= clopper_pearson_upper(0, 149, 0.05)
    # Rule of three: with no errors the 95% bound is about 3/n.
    for n in (100, 300, 1000):
        assert clopper_pearson_upper(0, n, 0.05) * n == pytest.approx(3.0, rel=0.02)


def test_bad_bound_arguments() -> None:
    with pytest.raises(InputError):
        clopper_pearson_upper(5, 4, 0.05)
    with pytest.raises(InputError):
        clopper_pearson_upper(0, 4, 1.5)


# --- certify_threshold ---------------------------------------------------------------------------

def test_never_certifies_with_too_little_data() -> None:
    conf = np.linspace(0.6, 0.99, 149)
    short = certify_threshold(conf[:148], np.ones(148, bool))
    assert short.threshold is None and short.more_labels_needed == 1
    assert "149" in short.message
    enough = certify_threshold(conf, np.ones(149, bool))
    assert enough.threshold == pytest.approx(0.6) and enough.automation_rate == 1.0
    assert enough.upper_bound is not None and enough.upper_bound <= 0.02


@FAST
@given(labeled)
def test_nothing_certified_below_the_zero_error_floor(data: tuple[list[float], list[bool]]) -> None:
    conf, ok = data
    result = certify_threshold(conf[:148], ok[:148])
    assert result.threshold is None and result.automation_rate == 0.0


@FAST
@given(model_outputs(max_n=600), st.sampled_from([0.02, 0.05, 0.1]))
def test_single_sequence_matches_reference(
    data: tuple[list[float], list[bool]], max_error: float
) -> None:
    conf, ok = data
    result = certify_threshold(conf, ok, max_error=max_error, starts=1)
    assert result.threshold == fixed_sequence_reference(conf, ok, max_error, 0.05)


@FAST
@given(model_outputs(), st.data())
def test_more_errors_never_loosen(
    data: tuple[list[float], list[bool]], draw: st.DataObject
) -> None:
    conf, ok = data
    flip = draw.draw(st.integers(0, len(ok) - 1))
    worse = list(ok)
    worse[flip] = False
    for starts in (None, 1):
        before = certify_threshold(conf, ok, starts=starts).threshold
        after = certify_threshold(conf, worse, starts=starts).threshold
        assert strictness(after) >= strictness(before)


@FAST
@given(model_outputs(), st.sampled_from([(0.02, 0.03), (0.02, 0.05), (0.05, 0.1)]))
def test_larger_target_never_stricter(
    data: tuple[list[float], list[bool]], targets: tuple[float, float]
) -> None:
    conf, ok = data
    low, high = targets
    for starts in ((160,), (160, 320, 640)):  # a pinned plan: same tests, only the target moves
        strict = certify_threshold(conf, ok, max_error=low, starts=starts).threshold
        loose = certify_threshold(conf, ok, max_error=high, starts=starts).threshold
        assert strictness(loose) <= strictness(strict)


@FAST
@given(model_outputs())
def test_result_is_consistent(data: tuple[list[float], list[bool]]) -> None:
    conf, ok = data
    result = certify_threshold(conf, ok)
    if result.threshold is None:
        assert result.n_autonomous == 0 and result.upper_bound is None
        assert result.message and result.method.startswith("ltt")
        return
    inside = np.asarray(conf) >= result.threshold
    assert result.n_autonomous == int(inside.sum())
    assert result.automation_rate == pytest.approx(inside.mean())
    assert result.observed_error == pytest.approx(1 - np.asarray(ok)[inside].mean())
    assert result.upper_bound is not None and result.test_level is not None
    assert result.observed_error is not None
    assert result.observed_error <= result.upper_bound <= result.max_error + 1e-12
    assert result.delta is not None and result.test_level <= result.delta


def test_later_entry_survives_a_confident_error() -> None:
    """One confidently wrong decision at the top sinks the textbook sequence."""
    conf = np.linspace(1.0, 0.5, 1000)
    ok = np.ones(1000, bool)
    ok[4] = False
    ok[900:] = np.arange(100) % 3 != 0
    assert plan_starts(1000, 0.02, 0.05) == (183, 366)
    assert certify_threshold(conf, ok, starts=1).threshold is None
    result = certify_threshold(conf, ok)
    assert result.threshold is not None and result.n_autonomous >= 366
    assert result.test_level == pytest.approx(0.025)  # entry 1 failed: entry 2 on its own share
    clean = certify_threshold(conf, np.ones(1000, bool))
    assert clean.threshold == 0.5 and clean.test_level == pytest.approx(0.05)  # handed on


def test_candidates_are_tested_strictest_first_in_any_order() -> None:
    conf = np.linspace(0.5, 1.0, 600)
    ok = conf > 0.55
    grid = [0.6, 0.9, 0.7, 0.8]
    a = certify_threshold(conf, ok, candidates=grid)
    b = certify_threshold(conf, ok, candidates=sorted(grid))
    assert a.threshold == b.threshold == 0.6
    with pytest.raises(InputError):
        certify_threshold(conf, ok, candidates=[1.5])
    above = certify_threshold(conf * 0.9, ok, candidates=[0.95, 0.99])
    assert above.threshold is None and above.more_labels_needed is None


def test_more_labels_when_top_has_errors() -> None:
    conf = np.linspace(1.0, 0.5, 300)
    ok = np.ones(300, bool)
    ok[[10, 100, 200]] = False
    result = certify_threshold(conf, ok)
    assert result.threshold is None and result.more_labels_needed is not None
    scale = (300 + result.more_labels_needed) / 300
    bigger = certify_threshold(np.repeat(conf, math.ceil(scale)), np.repeat(ok, math.ceil(scale)))
    assert bigger.threshold is not None
    hopeless = certify_threshold(conf, conf > 2)  # all wrong
    assert hopeless.more_labels_needed is None and "would not help" in hopeless.message


def test_empty_and_invalid_input() -> None:
    empty = certify_threshold([], [])
    assert empty.threshold is None and empty.more_labels_needed == 149
    with pytest.raises(InputError):
        certify_threshold([0.5, 1.2], [1, 0])
    with pytest.raises(InputError):
        certify_threshold([0.5, 0.7], [1, 2])
    with pytest.raises(InputError):
        certify_threshold([0.5], [1, 0])
    with pytest.raises(InputError):
        certify_threshold([0.5], [1], max_error=0)


# --- naive rule ----------------------------------------------------------------------------------

def test_naive_rule_hand_example() -> None:
    # 10 at 0.55 with 3 wrong, 50 at 0.75 with 1 wrong, 50 at 0.95 all right.
    conf = [0.55] * 10 + [0.75] * 50 + [0.95] * 50
    ok = [False] * 3 + [True] * 7 + [False] + [True] * 49 + [True] * 50
    # t <= 0.55: 4/110 = 3.6% > 2%; t = 0.56: 1/100 = 1% -> the lowest passing threshold.
    result = naive_threshold(conf, ok)
    assert result.threshold == 0.56 and result.method == "naive" and result.delta is None
    assert result.n_autonomous == 100 and result.observed_error == pytest.approx(0.01)
    assert result.automation_rate == pytest.approx(100 / 110)


def test_naive_rule_literature_quirks() -> None:
    # Rounded to 4 decimals, 9/449 = 2.0045% reads as 2.00% and passes.
    assert naive_threshold([0.9] * 449, [False] * 9 + [True] * 440).threshold == 0.5
    # Exact hundredths: a confidence of exactly 0.58 counts at threshold 0.58.
    assert naive_threshold([0.58] * 10 + [0.57], [True] * 10 + [False]).threshold == 0.58
    # Nothing passes: fall back to the strictest threshold that has data.
    fallback = naive_threshold([0.6] * 10 + [0.93] * 10, [False, True] * 10)
    assert fallback.threshold == 0.93 and "fell back" in fallback.message
    assert naive_threshold([0.2, 0.3], [True, True]).threshold is None


# --- per group -----------------------------------------------------------------------------------

def test_per_task_type_and_outcome() -> None:
    rng = np.random.default_rng(7)
    records = []
    for task, error in (("refund", 0.0), ("triage", 0.3)):
        for c in rng.uniform(0.6, 1.0, 400):
            records.append(LabeledDecision(float(c), bool(rng.random() >= error), task,
                                           "approve" if rng.random() < 0.5 else "remove"))
    records.append(LabeledDecision(0.9, True))  # no task type, no outcome: left out
    by_task = certify_by_task_type(records)
    assert list(by_task) == ["refund", "triage"]
    assert by_task["refund"].threshold is not None and by_task["refund"].n == 400
    assert by_task["triage"].threshold is None
    refund = [r for r in records if r.task_type == "refund"]
    direct = certify_threshold([r.confidence for r in refund], [r.correct for r in refund])
    assert by_task["refund"] == direct
    together = certify_by_task_type(records, simultaneous=True)
    assert together["refund"].delta == pytest.approx(0.025)
    by_outcome = certify_by_outcome(records, max_error_by_group={"remove": 0.001})
    assert by_outcome["remove"].max_error == 0.001 and by_outcome["approve"].max_error == 0.02
    assert by_outcome["remove"].threshold is None  # 0.1% needs ~3,000 clean decisions


# --- calibration quality -------------------------------------------------------------------------

def test_reliability_ece_brier_hand_example() -> None:
    conf = [0.1, 0.3, 0.35, 0.9, 0.95, 1.0]
    ok = [0, 1, 0, 1, 1, 0]
    table = reliability_table(conf, ok)
    filled = {b.lower: b for b in table if b.count}
    assert sorted(filled) == [0.1, 0.3, 0.9] and len(table) == 10
    assert filled[0.3].count == 2 and filled[0.3].mean_confidence == pytest.approx(0.325)
    assert filled[0.3].accuracy == pytest.approx(0.5)
    assert filled[0.9].count == 3 and filled[0.9].accuracy == pytest.approx(2 / 3)
    assert table[0].mean_confidence is None and table[0].accuracy is None
    # (1 * |0 - 0.1| + 2 * |0.5 - 0.325| + 3 * |2/3 - 0.95|) / 6
    assert expected_calibration_error(conf, ok) == pytest.approx(1.3 / 6)
    # (0.01 + 0.49 + 0.1225 + 0.01 + 0.0025 + 1) / 6
    assert brier_score(conf, ok) == pytest.approx(1.635 / 6)
    assert [b.count for b in reliability_table([0.57], [1], bins=100)][57] == 1
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == 0.0
    with pytest.raises(InputError):
        brier_score([], [])


# --- loading, report, CLI ------------------------------------------------------------------------

def test_load_csv_and_jsonl(tmp_path: Path) -> None:
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("confidence, correct ,task_type,outcome,note\n"
                        "0.9,true,refund,approve,x\n0.8,0,,,\n0.7,FALSE,triage,remove,\n")
    assert load_labeled(csv_file) == [
        LabeledDecision(0.9, True, "refund", "approve"),
        LabeledDecision(0.8, False),
        LabeledDecision(0.7, False, "triage", "remove"),
    ]
    jsonl = tmp_path / "labels.data"  # no telling suffix: sniffed from the leading "{"
    jsonl.write_text('{"confidence": 0.9, "correct": true}\n\n'
                     '{"confidence": "0.6", "correct": 1, "task_type": "refund"}\n'
                     '{"confidence": 1, "correct": "false", "outcome": null}\n')
    assert load_labeled(jsonl) == [
        LabeledDecision(0.9, True), LabeledDecision(0.6, True, "refund"),
        LabeledDecision(1.0, False)]


@pytest.mark.parametrize(("name", "text", "where", "field"), [
    ("a.csv", "confidence,correct\n0.9,true\n1.3,false\n", ":3:", "confidence"),
    ("a.csv", "confidence,correct\n0.9,true\nhigh,false\n", ":3:", "confidence"),
    ("a.csv", "confidence,correct\n0.9,maybe\n", ":2:", "correct"),
    ("a.csv", "confidence,correct\n0.9,\n", ":2:", "correct"),
    ("a.csv", "confidence,outcome\n0.9,approve\n", ":1:", "correct"),
    ("a.csv", "confidence,correct\n0.9,true,extra\n", ":2:", "row"),
    ("a.jsonl", '{"confidence": 0.9, "correct": true}\n{"confidence": 0.9\n', ":2:", "row"),
    ("a.jsonl", '[0.9, true]\n', ":1:", "row"),
    ("a.jsonl", '{"confidence": true, "correct": true}\n', ":1:", "confidence"),
    ("a.jsonl", '{"confidence": 0.5, "correct": 0.5}\n', ":1:", "correct"),
    ("a.jsonl", '{"confidence": 0.5, "correct": 1, "task_type": 3}\n', ":1:", "task_type"),
    ("a.jsonl", '{"confidence": NaN, "correct": 1}\n', ":1:", "confidence"),
    ("a.csv", "confidence,correct\n", "no labeled", "input"),
])
def test_bad_rows_name_line_and_field(
    tmp_path: Path, name: str, text: str, where: str, field: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        load_labeled(path)
    assert where in str(caught.value) and caught.value.field == field


def write_sample(path: Path, n: int = 600) -> Path:
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.7, 1.0, n)
    ok = rng.random(n) < 1 - 0.3 * (1 - conf) ** 2
    lines = ["confidence,correct,task_type"] + [
        f"{c:.4f},{int(k)},{'refund' if i % 2 else 'triage'}"
        for i, (c, k) in enumerate(zip(conf, ok, strict=True))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sample(tmp_path / "labels.csv")
    assert run_calibrate(["--input", str(path), "--by-task-type"]) == 0
    out = capsys.readouterr().out
    assert "certified" in out and "naive" in out and "refund" in out and "ECE" in out
    assert run_calibrate(["--input", str(path), "--json", "--max-error", "0.05"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["certified"]["max_error"] == 0.05 and data["naive"]["method"] == "naive"
    assert len(data["reliability"]) == 10


@pytest.mark.parametrize("args", [
    ["--input", "missing.csv"], ["--input", "x.csv", "--max-error", "lots"], [],
    ["--input", "x.csv", "--delta", "1"],
])
def test_cli_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    write_sample(tmp_path / "x.csv")
    args = [str(tmp_path / a) if a.endswith(".csv") else a for a in args]
    assert run_calibrate(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hitl calibrate: error: ") and err.count("\n") == 1


def test_render_report_shows_why_nothing_was_certified() -> None:
    records = [LabeledDecision(0.9, True) for _ in range(100)]
    text = render_report(build_report(records), source="x.csv")
    assert "x.csv" in text and "Too few decisions" in text and "About 49 more" in text
    records = [LabeledDecision(0.9, i % 10 != 0) for i in range(100)]
    assert "would not help" in render_report(build_report(records))


# --- the guarantee, by resampling ----------------------------------------------------------------

def simulate(rng: np.random.Generator, n: int) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """A calibrated-ish model: errors rarer at high confidence, a little overconfident."""
    conf = rng.beta(8, 1.5, n)
    wrong = rng.random(n) < 0.35 * (1 - conf) ** 1.5 + 0.002
    return conf, ~wrong


def test_guarantee_holds_where_the_naive_rule_fails() -> None:
    rng = np.random.default_rng(20240611)
    pool_conf, pool_ok = simulate(rng, 400_000)
    ascending = np.sort(pool_conf)
    errors_from_top = np.cumsum(~pool_ok[np.argsort(-pool_conf)])

    def true_error(threshold: float) -> float:
        m = pool_conf.size - int(np.searchsorted(ascending, threshold, side="left"))
        return float(errors_from_top[m - 1] / m) if m else 0.0

    runs, target, delta = 300, 0.02, 0.05
    certified_misses = naive_misses = certified_any = 0
    for _ in range(runs):
        conf, ok = simulate(rng, 1000)
        result = certify_threshold(conf, ok, max_error=target, delta=delta)
        if result.threshold is not None:
            certified_any += 1
            certified_misses += true_error(result.threshold) > target
        naive = naive_threshold(conf, ok, max_error=target)
        naive_misses += naive.threshold is not None and true_error(naive.threshold) > target
    slack = 3 * math.sqrt(delta * (1 - delta) / runs)
    assert certified_misses / runs <= delta + slack
    assert naive_misses / runs >= 0.25  # the literature rule overshoots far more often
    assert certified_any / runs >= 0.5  # and the guarantee is not bought by never answering
