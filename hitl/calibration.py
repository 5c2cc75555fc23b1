"""Confidence thresholds with a finite-sample guarantee, and calibration quality.

The usual recipe scans thresholds and keeps the loosest whose *observed* error
among autonomous decisions is under target. On 500-2,000 labels that choice is
as likely as not to sit above target in truth, because it is picked exactly
where the sample happened to be kind. ``certify_threshold`` runs Learn-then-Test
instead: an exact Clopper-Pearson test per candidate threshold, in fixed
sequences from strict to loose, each stopping at its first failure. Over the
draw of the labeled sample it guarantees

    P(true error among decisions with confidence >= threshold > max_error) <= delta.

Entry points. A single sequence from the strictest testable threshold (the
textbook design, ``starts=1``) needs the first ~149 decisions at the top to be
error-free for a 2% target. Real models are confidently wrong now and then, and
one such error there certifies nothing at all, however good the rest. So by
default the sequence can also be entered further down: K entries at 1, 2, 4, ...
times the smallest testable count, each holding delta/K, with a passed entry
handing its level on to the next (a graphical fixed-sequence procedure, Bretz
et al. 2009; K = 1 is plain fixed-sequence testing). K grows with the data while
the last entry covers at most half of it, and the family-wise error stays <= delta.

Candidate order. Candidates are tested strictest first, and neither their order
nor the entry points look at the labels: by default candidates are the distinct
observed confidences and the entries are counts of decisions. Given its count,
each test is exact. Taking counts and candidates from the confidences is sound
when the chance of an error does not rise with confidence -- the premise of
thresholding on confidence at all; ``tests/test_calibration.py`` and
``scripts/bench_calibration.py`` check the guarantee by resampling.

Pure numpy/scipy, no Temporal: the CLI, the benchmark and a policy editor share it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import beta as beta_dist
from scipy.stats import binom

from hitl.errors import InputError

METHOD_LTT = "ltt-fixed-sequence-clopper-pearson"
METHOD_NAIVE = "naive"
_MAX_TOTAL_LABELS = 1e9  # beyond this "more labels" is not an answer anyone can act on
_MAX_ENTRIES = 12

Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]
Ints = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class LabeledDecision:
    """One past decision with its confidence and whether it turned out right."""

    confidence: float
    correct: bool
    task_type: str | None = None
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class CertifiedThreshold:
    """A threshold and what is known about it.

    ``threshold`` is None when nothing could be certified; ``message`` then says
    why in plain words and ``more_labels_needed`` estimates how many more labels
    like these it would take (None when more labels would not help).
    ``automation_rate`` is the share of the sample with confidence >= threshold.
    ``upper_bound`` is the Clopper-Pearson bound at the level the threshold was
    tested at, ``test_level`` (at most ``delta``). The naive rule makes no
    probability statement: its ``delta`` is None and its bound is for contrast.
    """

    threshold: float | None
    upper_bound: float | None
    observed_error: float | None
    automation_rate: float
    n: int
    n_autonomous: int
    max_error: float
    delta: float | None
    method: str
    message: str
    more_labels_needed: int | None = None
    thresholds_tested: int = 0
    test_level: float | None = None
    starts: tuple[int, ...] = ()

    @property
    def certified(self) -> bool:
        return self.threshold is not None


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """One equal-width confidence bin; mean and accuracy are None when empty."""

    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


def clopper_pearson_upper(errors: int, n: int, delta: float) -> float:
    """Exact one-sided (1 - delta) upper bound on an error rate seen as errors/n."""
    if not 0 <= errors <= n:
        raise InputError(f"need 0 <= errors <= n, got errors={errors}, n={n}", field="errors")
    _check_level(delta, "delta")
    return float(_cp_upper(np.array([errors], float), np.array([n], float), delta)[0])


def min_autonomous_needed(max_error: float, delta: float) -> int:
    """Fewest autonomous decisions that can certify ``max_error`` at all (zero errors).

    Zero errors in n pass when (1 - max_error)**n <= delta, so this is about
    ln(1/delta) / max_error: 149 for 2% at delta 0.05 (the "rule of three").
    """
    _check_level(max_error, "max_error")
    _check_level(delta, "delta")
    return _n_min(float(max_error), float(delta))


@functools.lru_cache(maxsize=256)
def _n_min(max_error: float, delta: float) -> int:
    n = max(1, math.ceil(math.log(delta) / math.log1p(-max_error)))
    # Settle float ties with the very p-value the test uses, so the two agree.
    while n > 1 and binom.cdf(0, n - 1, max_error) <= delta:
        n -= 1
    while binom.cdf(0, n, max_error) > delta:
        n += 1
    return n


def plan_starts(
    n: int, max_error: float, delta: float, *, entries: int | None = None
) -> tuple[int, ...]:
    """Entry points, as counts of autonomous decisions: m, 2m, 4m, ... with m testable at delta/K.

    With ``entries`` None, K is the largest whose last entry covers at most half
    of the n decisions (at least 1): an entry needs room below it for the
    sequence to run on, and one covering nearly everything rarely passes. Pass
    the result to ``certify_threshold(starts=...)`` to keep the same plan across
    data sets or targets.
    """
    if entries is None:
        entries = int(np.searchsorted(_entry_sizes(max_error, delta), n / 2, side="right")) or 1
    if entries < 1:
        raise InputError(f"starts must be at least 1, got {entries}", field="starts")
    first = min_autonomous_needed(max_error, delta / entries)
    return tuple(first * 2**k for k in range(entries))


def certify_threshold(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    max_error: float = 0.02,
    delta: float = 0.05,
    candidates: ArrayLike | None = None,
    starts: int | Sequence[int] | None = None,
    min_autonomous: int = 1,
) -> CertifiedThreshold:
    """The loosest threshold whose error is certified <= ``max_error`` w.p. >= 1 - delta.

    Args:
        confidence: model confidence per labeled decision, in [0, 1].
        correct: whether each decision was right (bools or 0/1).
        max_error: target error rate among autonomous decisions.
        delta: allowed chance that the certified threshold misses the target.
        candidates: thresholds to consider, tested strictest first whatever the
            order given; default the distinct observed confidences.
        starts: entry points. None plans them from the data size
            (``plan_starts``); an int K asks for K of them; a sequence gives the
            counts of autonomous decisions to enter at, delta split evenly.
            ``starts=1`` is the textbook single fixed sequence. A fixed
            sequence of counts also makes the result monotone in ``max_error``.
        min_autonomous: never enter below this many autonomous decisions (an
            operational floor; the statistical floor applies anyway).
    """
    _check_level(max_error, "max_error")
    _check_level(delta, "delta")
    conf, ok = _as_arrays(confidence, correct)
    grid = _grid(conf, candidates)
    counts, errs = _counts(conf, ok, grid)
    n = int(conf.size)
    plan = _plan(starts, n, max_error, delta)
    entries = tuple(max(s, int(min_autonomous)) for s in plan)
    weight = delta / len(entries)
    # Entry node of each start: the strictest candidate with enough decisions.
    at = np.searchsorted(counts, entries, side="left")
    nodes, hits = np.unique(at[at < grid.size], return_counts=True)
    pvals = binom.cdf(errs, counts, max_error)  # small when the error is surely below target
    level, alive, tested = 0.0, False, 0
    best: int | None = None
    best_level = 0.0
    for k, node in enumerate(nodes):
        end = int(nodes[k + 1]) if k + 1 < nodes.size else grid.size
        level = (level if alive else 0.0) + weight * int(hits[k])
        failed = np.flatnonzero(pvals[node:end] > level)
        passed = int(failed[0]) if failed.size else end - int(node)
        tested += min(passed + 1, end - int(node))
        alive = not failed.size
        if passed:
            best, best_level = int(node) + passed - 1, level

    def result(message: str, more: int | None = None) -> CertifiedThreshold:
        if best is None:
            return CertifiedThreshold(None, None, None, 0.0, n, 0, max_error, delta, METHOD_LTT,
                                      message, more, tested, None, entries)
        k, m = int(errs[best]), int(counts[best])
        bound = float(_cp_upper(np.array([k], float), np.array([m], float), best_level)[0])
        return CertifiedThreshold(float(grid[best]), bound, k / m, m / n, n, m, max_error, delta,
                                  METHOD_LTT, message, None, tested, best_level, entries)

    if best is not None:
        m = int(counts[best])
        return result(
            f"Certified: with confidence >= {grid[best]:.6g}, error among autonomous decisions "
            f"is at most {max_error:.1%} with probability {1 - delta:.0%} (observed "
            f"{errs[best] / m:.2%}, {m} of {n} autonomous).")
    more = _more_labels_needed(counts, errs, n, max_error, delta, starts, min_autonomous)
    tail = ("More labels like these would not help: where the tests start, the observed error "
            "is at or above the target; improve the model or relax max_error." if more is None
            else f"About {more} more labeled decision{'s' if more != 1 else ''} like these "
            "would be needed.")
    if n == 0:
        return result(f"No labeled decisions; at least {more} are needed (that many "
                      "autonomous decisions without a single error).", more)
    if nodes.size == 0:
        return result(
            f"Too few decisions: certifying {max_error:.1%} needs at least {entries[0]} autonomous "
            f"decisions even with zero errors; {int(counts.max())} are available. {tail}", more)
    first = int(nodes[0])
    later = "; no later entry point passed either" if nodes.size > 1 else ""
    bound = clopper_pearson_upper(int(errs[first]), int(counts[first]), weight * int(hits[0]))
    return result(
        f"Nothing certified: the strictest threshold tested (confidence >= {grid[first]:.6g}) "
        f"has {_plural(int(errs[first]), 'error')} in {int(counts[first])}, an upper bound of "
        f"{bound:.2%}, above {max_error:.1%}{later}. {tail}", more)


def naive_threshold(
    confidence: ArrayLike, correct: ArrayLike, *, max_error: float = 0.02, delta: float = 0.05
) -> CertifiedThreshold:
    """The literature's rule, for comparison: no guarantee, overshoots about half the time.

    Scan 0.50..0.99 in steps of 0.01, keep the lowest threshold whose observed
    error, rounded to 4 decimals as the published code does, is <= max_error;
    if none, fall back to the strictest threshold that has data. Grid points are
    exact hundredths (``np.arange(0.5, 1, 0.01)`` drifts, e.g. 0.5800000000000001,
    and would silently leave out a confidence of exactly 0.58). ``delta`` only
    sets the confidence of the reported ``upper_bound``; it never moves the choice.
    """
    _check_level(max_error, "max_error")
    _check_level(delta, "delta")
    conf, ok = _as_arrays(confidence, correct)
    n = int(conf.size)
    grid = np.arange(50, 100) / 100
    counts, errs = _counts(conf, ok, grid)
    has = counts > 0
    rate = np.divide(errs, counts, out=np.ones(grid.size), where=has)
    valid = np.flatnonzero(has & (np.round(rate, 4) <= max_error))
    if valid.size:
        index, note = int(valid[0]), "lowest threshold with observed error under target"
    elif has.any():
        index = int(np.flatnonzero(has)[-1])
        note = "no threshold met the target; fell back to the strictest with data"
    else:
        return CertifiedThreshold(None, None, None, 0.0, n, 0, max_error, None, METHOD_NAIVE,
                                  "No decision has confidence >= 0.50.")
    k, m = int(errs[index]), int(counts[index])
    bound = float(_cp_upper(np.array([k], float), np.array([m], float), delta)[0])
    return CertifiedThreshold(float(grid[index]), bound, k / m, m / n, n, m, max_error, None,
                              METHOD_NAIVE, f"Naive rule: {note} (no guarantee).",
                              test_level=delta)


def certify_by_task_type(
    records: Iterable[LabeledDecision],
    *,
    max_error: float = 0.02,
    delta: float = 0.05,
    max_error_by_group: Mapping[str, float] | None = None,
    simultaneous: bool = False,
    min_autonomous: int = 1,
) -> dict[str, CertifiedThreshold]:
    """One certified threshold per task type; records without a task type are left out.

    Each group's guarantee holds at ``delta`` on its own. With ``simultaneous``
    delta is split evenly (Bonferroni) so that all groups hold together.
    """
    return _certify_groups(records, lambda r: r.task_type, max_error, delta,
                           max_error_by_group, simultaneous, min_autonomous)


def certify_by_outcome(
    records: Iterable[LabeledDecision],
    *,
    max_error: float = 0.02,
    delta: float = 0.05,
    max_error_by_group: Mapping[str, float] | None = None,
    simultaneous: bool = False,
    min_autonomous: int = 1,
) -> dict[str, CertifiedThreshold]:
    """One certified threshold per outcome label, e.g. a stricter bar to auto-remove.

    ``max_error_by_group={"remove": 0.005}`` asks more of removals than of the
    default ``max_error``; the guarantee is about errors among decisions with
    that outcome. Records without an outcome are left out.
    """
    return _certify_groups(records, lambda r: r.outcome, max_error, delta,
                           max_error_by_group, simultaneous, min_autonomous)


def reliability_table(
    confidence: ArrayLike, correct: ArrayLike, *, bins: int = 10
) -> list[ReliabilityBin]:
    """Equal-width bins over [0, 1]: count, mean confidence and accuracy per bin.

    A bin holds ``lower <= confidence < upper``; the last one also holds 1.0.
    """
    conf, ok = _as_arrays(confidence, correct)
    index = _bin_index(conf, bins)
    table = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        table.append(ReliabilityBin(
            b / bins, (b + 1) / bins, count,
            float(conf[members].mean()) if count else None,
            float(ok[members].mean()) if count else None))
    return table


def expected_calibration_error(
    confidence: ArrayLike, correct: ArrayLike, *, bins: int = 10
) -> float:
    """Count-weighted mean |accuracy - mean confidence| over the reliability bins."""
    conf, ok = _as_arrays(confidence, correct)
    _require_data(conf)
    index = _bin_index(conf, bins)
    counts = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, ok.astype(float), bins) - np.bincount(index, conf, bins))
    return float(gap.sum() / counts.sum())


def brier_score(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Mean squared gap between confidence and correctness (0 best, lower is better)."""
    conf, ok = _as_arrays(confidence, correct)
    _require_data(conf)
    return float(np.mean((conf - ok) ** 2))


def _certify_groups(
    records: Iterable[LabeledDecision],
    key: Callable[[LabeledDecision], str | None],
    max_error: float,
    delta: float,
    max_error_by_group: Mapping[str, float] | None,
    simultaneous: bool,
    min_autonomous: int,
) -> dict[str, CertifiedThreshold]:
    groups: dict[str, list[LabeledDecision]] = {}
    for record in records:
        name = key(record)
        if name is not None:
            groups.setdefault(name, []).append(record)
    targets = dict(max_error_by_group or {})
    level = delta / len(groups) if simultaneous and groups else delta
    return {
        name: certify_threshold(
            [r.confidence for r in members], [r.correct for r in members],
            max_error=targets.get(name, max_error), delta=level, min_autonomous=min_autonomous)
        for name, members in sorted(groups.items())
    }


@functools.lru_cache(maxsize=64)
def _entry_sizes(max_error: float, delta: float) -> tuple[int, ...]:
    """Data needed for K entries, K = 1, 2, ...: the largest entry point, m(delta/K) * 2**(K-1)."""
    return tuple(min_autonomous_needed(max_error, delta / k) * 2 ** (k - 1)
                 for k in range(1, _MAX_ENTRIES + 1))


def _plan(
    starts: int | Sequence[int] | None, n: int, max_error: float, delta: float
) -> tuple[int, ...]:
    if starts is None or isinstance(starts, int):
        return plan_starts(n, max_error, delta, entries=starts)
    plan = tuple(sorted(int(s) for s in starts))
    if not plan or plan[0] < 1:
        raise InputError("starts must be positive counts of decisions", field="starts")
    return plan


def _more_labels_needed(
    counts: Ints, errs: Ints, n: int, max_error: float, delta: float,
    starts: int | Sequence[int] | None, min_autonomous: int,
) -> int | None:
    """How many more labels, if new ones looked like these, before something certifies.

    Plug-in estimate: scale every count by f (f * n labels in all, same shares
    and error rates per threshold), re-plan the entry points for f * n, and take
    the least f on a 1% grid at which some entry node passes at delta/K --
    enough for a certified threshold. Zero data assumes the best case: all
    autonomous, no errors.
    """
    if n == 0:
        return max(int(min_autonomous), min_autonomous_needed(max_error, delta))
    keep = counts > 0
    if not keep.any():  # no candidate is ever reached by decisions like these
        return None
    c, e = counts[keep].astype(float), errs[keep].astype(float)

    def certifies(scale: Floats) -> Bools:
        if starts is None:  # re-plan for f * n labels, as certify_threshold would
            sizes = _entry_sizes(float(max_error), float(delta))
            k = np.maximum(np.searchsorted(sizes, np.floor(scale * n) / 2, side="right"), 1)
        else:
            k = np.zeros(scale.size, dtype=np.intp)
        out = np.zeros(scale.size, dtype=bool)
        for entries in np.unique(k):
            plan = (_plan(starts, n, max_error, delta) if starts is not None
                    else plan_starts(n, max_error, delta, entries=int(entries)))
            uses = np.flatnonzero(k == entries)
            f = scale[uses]
            for entry in plan:
                node = np.searchsorted(c, max(entry, min_autonomous) / f, side="left")
                inside = node < c.size
                node = np.minimum(node, c.size - 1)
                bound = _cp_upper(e[node] * f, c[node] * f, delta / len(plan))
                out[uses[inside & (bound <= max_error)]] = True
        return out

    steps = math.ceil(math.log(_MAX_TOTAL_LABELS / n) / math.log(1.01))
    coarse = (1.01 ** np.arange(steps)).astype(np.float64)
    hits = np.flatnonzero(certifies(coarse))
    if not hits.size:
        return None
    first = int(hits[0])
    fine = np.linspace(coarse[max(first - 1, 0)], coarse[first], 257).astype(np.float64)
    total = math.floor(float(fine[int(np.argmax(certifies(fine)))]) * n)
    if not certifies(np.array([total / n]))[0]:
        total += 1
    return max(total - n, 1)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _cp_upper(errors: Floats, n: Floats, delta: float) -> Floats:
    """Vectorised Clopper-Pearson upper bound; real-valued counts are allowed."""
    full = errors >= n  # also n == 0: nothing observed, nothing bounded
    a = errors + 1.0
    b = np.where(full, 1.0, n - errors)
    return np.where(full, 1.0, beta_dist.ppf(1.0 - delta, a, b)).astype(np.float64)


def _counts(
    conf: Floats, ok: Bools, grid: Floats
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Decisions with confidence >= t, and errors among them, for each t in grid."""
    ascending = np.sort(conf)
    counts = (conf.size - np.searchsorted(ascending, grid, side="left")).astype(np.int64)
    order = np.argsort(-conf, kind="stable")
    cumulative = np.concatenate([[0], np.cumsum(~ok[order])]).astype(np.int64)
    return counts, cumulative[counts]


def _grid(conf: Floats, candidates: ArrayLike | None) -> Floats:
    if candidates is None:
        return np.unique(conf)[::-1].copy()
    grid = np.asarray(candidates, dtype=np.float64).ravel()
    if grid.size == 0 or not np.all(np.isfinite(grid)) or grid.min() < 0 or grid.max() > 1:
        raise InputError("candidates must be non-empty and within [0, 1]", field="candidates")
    return np.unique(grid)[::-1].copy()


def _bin_index(conf: Floats, bins: int) -> NDArray[np.intp]:
    if bins < 1:
        raise InputError(f"bins must be >= 1, got {bins}", field="bins")
    edges = np.arange(bins + 1) / bins  # exact i/bins, so 0.57 lands in bin 57 of 100
    return np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)


def _as_arrays(confidence: ArrayLike, correct: ArrayLike) -> tuple[Floats, Bools]:
    try:
        conf = np.asarray(confidence, dtype=np.float64)
        raw = np.asarray(correct)
    except (TypeError, ValueError) as exc:
        raise InputError(f"confidence must be numbers: {exc}", field="confidence") from exc
    if conf.ndim != 1 or raw.ndim != 1 or conf.size != raw.size:
        raise InputError("confidence and correct must be flat and of equal length",
                         field="correct")
    if conf.size and (not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1):
        raise InputError("confidence must be within [0, 1]", field="confidence")
    if raw.dtype == np.bool_:
        return conf, raw
    if raw.size and (raw.dtype.kind not in "iuf" or not np.all((raw == 0) | (raw == 1))):
        raise InputError("correct must be booleans or 0/1", field="correct")
    return conf, raw.astype(np.bool_)


def _check_level(value: float, name: str) -> None:
    if not (isinstance(value, int | float) and 0 < value < 1):
        raise InputError(f"{name} must be strictly between 0 and 1, got {value!r}", field=name)


def _require_data(conf: Floats) -> None:
    if conf.size == 0:
        raise InputError("no labeled decisions", field="confidence")
