"""``hitl calibrate``: certify a confidence threshold from labeled past decisions.

Reads a CSV or JSONL file of labeled decisions, certifies a threshold (see
``hitl.calibration``), always shows the literature's naive threshold beside it
so the difference is visible, and reports calibration quality. ``hitl/cli.py``
dispatches to ``run_calibrate``; the other functions are public so a UI or a
notebook can build the same report.

numpy and scipy are the optional ``calibration`` extra, so ``hitl.calibration``
is imported only when a report is built: the rest of the CLI works without them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from hitl.errors import InputError
from hitl.input_files import read_text
from hitl.limits import MAX_DATA_FILE_BYTES

if TYPE_CHECKING:
    from hitl.calibration import CertifiedThreshold, LabeledDecision, ReliabilityBin

_TRUE = {"true", "1"}
_FALSE = {"false", "0"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}

Fail = Callable[[str, str], NoReturn]


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    """Everything ``hitl calibrate`` shows, as data."""

    n: int
    max_error: float
    delta: float
    certified: CertifiedThreshold
    naive: CertifiedThreshold
    by_task_type: dict[str, CertifiedThreshold]
    by_outcome: dict[str, CertifiedThreshold]
    reliability: list[ReliabilityBin]
    ece: float
    brier: float


def load_labeled(path: str | Path) -> list[LabeledDecision]:
    """Labeled decisions from CSV, or JSONL (one object a line; by suffix or a leading ``{``).

    Fields: ``confidence`` in [0, 1]; ``correct`` as a boolean, 0/1 or
    "true"/"false"; optional ``task_type`` and ``outcome``. Other fields are
    ignored. A bad row raises ``InputError`` naming its line and field.
    """
    path = Path(path)
    text = read_text(path, max_bytes=MAX_DATA_FILE_BYTES, what="labeled data", field="input")
    jsonl = path.suffix.lower() in _JSONL_SUFFIXES or (
        path.suffix.lower() != ".csv" and text.lstrip().startswith("{"))
    rows = _jsonl_rows(path, text) if jsonl else _csv_rows(path, text)
    records = [_record(path, line, row) for line, row in rows]
    if not records:
        raise InputError(f"{path}: no labeled decisions", field="input")
    return records


def build_report(
    records: Sequence[LabeledDecision],
    *,
    max_error: float = 0.02,
    delta: float = 0.05,
    by_task_type: bool = False,
    by_outcome: bool = False,
    bins: int = 10,
) -> CalibrationReport:
    """Certified and naive thresholds, optional per-group ones, and calibration quality."""
    from hitl import calibration as cal

    confidence = [r.confidence for r in records]
    correct = [r.correct for r in records]
    return CalibrationReport(
        n=len(records),
        max_error=max_error,
        delta=delta,
        certified=cal.certify_threshold(confidence, correct, max_error=max_error, delta=delta),
        naive=cal.naive_threshold(confidence, correct, max_error=max_error, delta=delta),
        by_task_type=(cal.certify_by_task_type(records, max_error=max_error, delta=delta)
                      if by_task_type else {}),
        by_outcome=(cal.certify_by_outcome(records, max_error=max_error, delta=delta)
                    if by_outcome else {}),
        reliability=cal.reliability_table(confidence, correct, bins=bins),
        ece=cal.expected_calibration_error(confidence, correct, bins=bins),
        brier=cal.brier_score(confidence, correct),
    )


def report_as_dict(report: CalibrationReport) -> dict[str, Any]:
    """The report as JSON-ready data (no NaN: missing values are None)."""
    return dataclasses.asdict(report)


def render_report(report: CalibrationReport, *, source: str | None = None) -> str:
    """The report as plain-text tables for a terminal."""
    level = f"{1 - report.delta:.0%}"
    lines = [
        f"Calibration of {report.n} labeled decisions" + (f" from {source}" if source else ""),
        f"Target: error among autonomous decisions <= {report.max_error:.1%}, "
        f"with probability {level} (delta {report.delta:g})",
        "",
        *_threshold_table("method", {"certified": report.certified, "naive": report.naive}),
        "",
        report.certified.message,
        report.naive.message + " Its bound is shown for contrast.",
    ]
    for title, groups in (("task type", report.by_task_type), ("outcome", report.by_outcome)):
        if groups:
            lines += ["", f"Certified per {title} (each at delta {report.delta:g}):",
                      *_threshold_table(title.replace(" ", "_"), groups)]
            lines += [f"  {name}: {t.message}" for name, t in groups.items() if not t.certified]
    lines += ["", f"Reliability ({len(report.reliability)} equal-width bins):", *_table(
        ["confidence", "count", "mean conf", "accuracy"],
        [[f"[{b.lower:.2f}, {b.upper:.2f}{']' if b.upper >= 1 else ')'}", str(b.count),
          _num(b.mean_confidence, "{:.3f}"), _num(b.accuracy, "{:.3f}")]
         for b in report.reliability])]
    lines.append(f"ECE {report.ece:.2%}   Brier {report.brier:.4f}")
    return "\n".join(lines)


def run_calibrate(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 on success, 2 with a one-line message on bad input."""
    parser = _Parser(prog="hitl calibrate", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--input", required=True, metavar="FILE",
                        help="CSV or JSONL of labeled decisions")
    parser.add_argument("--max-error", type=float, default=0.02,
                        help="target error among autonomous decisions (default 0.02)")
    parser.add_argument("--delta", type=float, default=0.05,
                        help="allowed chance the certified threshold misses it (default 0.05)")
    parser.add_argument("--by-task-type", action="store_true", help="also certify per task type")
    parser.add_argument("--by-outcome", action="store_true", help="also certify per outcome")
    parser.add_argument("--bins", type=int, default=10, help="reliability bins (default 10)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    try:
        args = parser.parse_args(argv)
        report = build_report(load_labeled(args.input), max_error=args.max_error,
                              delta=args.delta, by_task_type=args.by_task_type,
                              by_outcome=args.by_outcome, bins=args.bins)
    except InputError as exc:
        print(f"hitl calibrate: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"hitl calibrate: needs the calibration extra, pip install 'hitl[calibration]' "
              f"({exc.name} is missing)", file=sys.stderr)
        return 1
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    if args.json:
        print(json.dumps(report_as_dict(report), indent=2))
    else:
        print(render_report(report, source=args.input))
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def _threshold_table(
    first: str, results: Mapping[str, CertifiedThreshold]
) -> list[str]:
    rows = [[name, _num(t.threshold, "{:.6g}"), f"{t.automation_rate:.1%}",
             f"{t.n_autonomous}/{t.n}", _num(t.observed_error, "{:.2%}"),
             _bound(t)] for name, t in results.items()]
    return _table([first, "threshold", "automation", "autonomous", "observed error",
                   "upper bound (confidence)"], rows)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in (headers, *rows)]


def _bound(result: CertifiedThreshold) -> str:
    if result.upper_bound is None or result.test_level is None:
        return "-"
    return f"{result.upper_bound:.2%} ({1 - result.test_level:.1%})"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text), restkey="\0extra")
    if reader.fieldnames is None:
        return
    reader.fieldnames = [name.strip() for name in reader.fieldnames]
    for name in ("confidence", "correct"):
        if name not in reader.fieldnames:
            raise InputError(f"{path}:1: {name}: missing column", field=name)
    for row in reader:
        if "\0extra" in row:
            raise InputError(f"{path}:{reader.line_num}: more values than columns", field="row")
        yield reader.line_num, row


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{line}: not valid JSON: {exc.msg}", field="row") from exc
        if not isinstance(row, dict):
            raise InputError(f"{path}:{line}: expected a JSON object", field="row")
        yield line, row


def _record(path: Path, line: int, row: Mapping[str, Any]) -> LabeledDecision:
    from hitl.calibration import LabeledDecision

    def fail(field: str, problem: str) -> NoReturn:
        raise InputError(f"{path}:{line}: {field}: {problem}", field=field)

    return LabeledDecision(
        confidence=_confidence(row.get("confidence"), fail),
        correct=_correct(row.get("correct"), fail),
        task_type=_label(row.get("task_type"), "task_type", fail),
        outcome=_label(row.get("outcome"), "outcome", fail),
    )


def _confidence(value: Any, fail: Fail) -> float:
    if value is None or value == "":
        fail("confidence", "missing")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        fail("confidence", f"expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        fail("confidence", f"expected a number, got {value!r}")
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        fail("confidence", f"must be within [0, 1], got {value!r}")
    return number


def _correct(value: Any, fail: Fail) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if value is None or value == "":
        fail("correct", "missing")
    fail("correct", f'expected true/false or 1/0, got {value!r}')


def _label(value: Any, field: str, fail: Fail) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        fail(field, f"expected text, got {value!r}")
    return value.strip()
