"""``hitl metrics``: the health of the HITL loop from the store, per task type, with alerts.

Reads ``HITL_DATABASE_URL`` (or the SQLite store in ``HITL_DATA_DIR``), computes
``hitl.health``'s metrics for a time window per task type and overall, the
escalation trend over consecutive windows, and ``hitl.alerts``' anti-patterns.
``hitl/cli.py`` dispatches to ``run_metrics``; ``build_report`` is public so a
dashboard can build the same report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from hitl import health as h
from hitl.alerts import DEFAULT_THRESHOLDS, Alert, AlertThresholds, Severity, detect_alerts
from hitl.cli_failures import HANDLED, exit_code
from hitl.durations import format_duration, parse_duration
from hitl.errors import InputError
from hitl.health_store import HealthData

if TYPE_CHECKING:
    from sqlmodel import Session

ALL = "all"
MAX_WINDOWS = 1000


@dataclass(frozen=True, slots=True)
class ScopeHealth:
    """Every metric of one task type (or ``all``) over the window."""

    scope: str
    decisions: int
    escalation: h.Rate
    auto_resolve: h.Rate
    error_escape: h.Estimate
    audits_awaiting_verdict: int
    latency: h.Latency
    model_agreement: h.Rate
    reviewers: h.ReviewerAgreement
    feedback: h.Feedback
    cost: h.Cost
    backlog: h.Backlog
    trend: list[h.WindowRate]


@dataclass(frozen=True, slots=True)
class MetricsReport:
    since: datetime
    until: datetime
    window_seconds: float
    unit_costs: h.UnitCosts
    scopes: list[ScopeHealth]
    alerts: list[Alert]


def build_report(data: HealthData, *, now: datetime, window: timedelta,
                 costs: h.UnitCosts | None = None,
                 thresholds: AlertThresholds = DEFAULT_THRESHOLDS,
                 last_recalibration: datetime | None = None,
                 reviews_used: int | None = None) -> MetricsReport:
    """Metrics per task type, plus ``all`` when there are several (or none); alerts
    per task type and, with several, overall, most severe first."""
    costs = costs or h.UnitCosts()
    windows = h.tile_windows(data.since, data.until, window)
    types = data.task_types
    parts = [(t, data.for_task_type(t)) for t in types]
    if len(types) != 1:
        parts.append((ALL, data))
    scopes, alerts = [], []
    for scope, part in parts:
        s = ScopeHealth(
            scope=scope, decisions=len(part.decisions),
            escalation=h.escalation_rate(part.decisions),
            auto_resolve=h.auto_resolve_rate(part.decisions),
            error_escape=h.error_escape_rate(part.audits),
            audits_awaiting_verdict=sum(a.sampled and a.verdict is None for a in part.audits),
            latency=h.review_latency(part.reviews),
            model_agreement=h.model_agreement(part.reviews),
            reviewers=h.reviewer_agreement(part.reviews),
            feedback=h.feedback_utilization(part.reviews, now=now,
                                            last_recalibration=last_recalibration,
                                            reviews_used=reviews_used),
            cost=h.decision_cost(part.decisions, part.reviews, costs),
            backlog=h.backlog(part.decisions, part.reviews, part.queue),
            trend=h.escalation_trend(part.decisions, windows),
        )
        scopes.append(s)
        if scope != ALL or len(types) > 1:
            alerts += detect_alerts(scope=scope, escalation=s.escalation,
                                    agreement=s.model_agreement, reviewers=s.reviewers,
                                    escape=s.error_escape, backlog=s.backlog, trend=s.trend,
                                    thresholds=thresholds)
    severities = list(Severity)[::-1]  # most severe first; scopes keep their order within
    alerts.sort(key=lambda alert: severities.index(alert.severity))
    return MetricsReport(data.since, data.until, window.total_seconds(), costs, scopes, alerts)


def report_as_dict(report: MetricsReport) -> dict[str, Any]:
    """JSON-ready data: datetimes as ISO strings, missing values as None."""
    return _jsonable(dataclasses.asdict(report))  # type: ignore[no-any-return]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value.isoformat() if isinstance(value, datetime) else value


# ---------------------------------------------------------------- rendering

def render_report(report: MetricsReport) -> str:
    lines = [f"hitl metrics  {report.since.isoformat()} .. {report.until.isoformat()}  "
             f"(trend in {format_duration(report.window_seconds)} windows)"]
    for s in report.scopes:
        lines += ["", f"{s.scope}: {s.decisions} decisions", *_table(_rows(s, report))]
    lines += ["", "alerts" if report.alerts else "alerts: none"]
    for alert in report.alerts:
        lines += [f"  {alert.severity.value.upper():<8} {alert.scope}  {alert.code}: "
                  f"{alert.message}", f"           -> {alert.action}"]
    return "\n".join(lines)


def _rows(s: ScopeHealth, report: MetricsReport) -> list[list[str]]:
    e, k, a, f, c, b = (s.error_escape, s.reviewers.kappa, s.reviewers.alpha, s.feedback,
                        s.cost, s.backlog)
    escape = _rate(h.Rate(e.count, e.total, e.value))
    if e.lower is not None and e.upper is not None:
        escape += f", {e.confidence:.0%} CI {e.lower:.2%}-{e.upper:.2%} ({e.method})"
    if s.audits_awaiting_verdict:
        escape += f"; {s.audits_awaiting_verdict} sampled awaiting a verdict"
    recal = "never" if f.days_since_recalibration is None else (
        f"{f.days_since_recalibration:.0f} days ago"
        + (f", used {f.used_share:.0%} of feedback" if f.used_share is not None else ""))
    units = report.unit_costs
    cost = "-" if c.per_decision is None else (
        f"${c.per_decision:.4f}/decision, ${c.total:.2f} total ({c.judge_calls} judge calls, "
        f"{c.human_reviews} human reviews" + (f", human {c.human_share:.0%}"
                                              if c.human_share is not None else "") + ")")
    trend = " -> ".join(f"{_pct(w.rate.value)} ({w.rate.total})" for w in s.trend)
    return [
        ["metric", "value", "target"],
        ["escalation rate", _rate(s.escalation), "15-30% (domain-dependent)"],
        ["auto-resolve rate", _rate(s.auto_resolve), "70-85%"],
        ["error escape rate", escape, "< 2%"],
        ["review latency", f"p50 {_secs(s.latency.p50)}, p95 {_secs(s.latency.p95)} "
                           f"({s.latency.n} reviews)", "p95 < 5 min"],
        ["model agreement", _rate(s.model_agreement), "> 85%; > 90% unchanged: too strict"],
        ["reviewer kappa", _stat(k, "pairs"), ">= 0.60 (hitl default)"],
        ["reviewer alpha", _stat(a, "decisions"), ">= 0.60 (hitl default)"],
        ["structured feedback", _rate(f.structured) + f" of corrections ({f.with_answer} with "
                                f"answer, {f.with_category} with category)", "every correction"],
        ["last recalibration", recal, "monthly"],
        ["cost", cost, f"rules ${units.rule:g}, judge ${units.judge:g}, human ${units.human:g}"],
        ["backlog", f"{b.arrivals} arrived, {b.reviewed} decided by reviewers, {b.waiting} "
                    f"still waiting, {b.unreviewed} finished unreviewed", "arrivals <= reviews"],
        ["escalation trend", trend, "falling"],
    ]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
            + "  " + row[-1] for row in rows]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _rate(rate: h.Rate) -> str:
    return f"{_pct(rate.value)} ({rate.count}/{rate.total})"


def _stat(stat: h.Statistic, unit: str) -> str:
    if stat.value is None:
        return f"- ({stat.reason})"
    return f"{stat.value:.2f} ({stat.n} {unit})"


def _secs(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{seconds % 60:02.0f}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


# -------------------------------------------------------------------- entry

def last_recalibration(session: Session) -> tuple[datetime, int] | None:
    """When the newest stored recalibration ran and how many corrections it used
    (the share of structured corrections that reached the thresholds)."""
    from sqlmodel import col, select

    from hitl.policy_versions import PolicyVersionRow
    from hitl.recalibration import feedback_usage

    rows = session.exec(select(PolicyVersionRow)
                        .where(col(PolicyVersionRow.source) == "recalibration")
                        .order_by(col(PolicyVersionRow.created_at).desc()).limit(20)).all()
    for row in rows:
        usage = feedback_usage(row.proposal)
        if usage is not None:
            return row.created_at, usage.corrections_used
    return None


def run_metrics(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 on success, 2 with one line on bad input, 1 if the store fails."""
    from hitl.health_store import load_health_data
    from hitl.settings import Settings
    from hitl.store import init_store, make_engine, session_scope

    parser = _Parser(prog="hitl metrics", description=__doc__.splitlines()[0] if __doc__ else "")
    window = parser.add_mutually_exclusive_group()
    window.add_argument("--days", type=float, help="the last N days (default 30)")
    window.add_argument("--since", help="start, ISO date or datetime (UTC unless it says)")
    parser.add_argument("--until", help="end, exclusive; a bare date includes that day")
    parser.add_argument("--task-type", help="only this task type")
    parser.add_argument("--window", default="7d",
                        help="trend window: 7d, 24h, ... (default 7d)")
    parser.add_argument("--rule-cost", type=float, default=h.UnitCosts().rule, metavar="USD")
    parser.add_argument("--judge-cost", type=float, default=h.UnitCosts().judge, metavar="USD",
                        help="per judge call (default 0.005)")
    parser.add_argument("--human-cost", type=float, default=h.UnitCosts().human, metavar="USD",
                        help="per human review (default 1.00)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    try:
        args = parser.parse_args(argv)
        now = datetime.now(UTC)
        until = parse_moment(args.until, "--until", end=True) if args.until else now
        days = _positive(30.0 if args.days is None else args.days, "--days")
        since = (parse_moment(args.since, "--since", end=False) if args.since
                 else until - timedelta(days=days))
        if since >= until:
            raise InputError(f"--since {since.isoformat()} is not before --until "
                             f"{until.isoformat()}")
        try:
            length = timedelta(seconds=parse_duration(args.window))
        except ValueError as exc:
            raise InputError(f"--window: {exc}") from None
        _positive(length.total_seconds(), "--window")
        if (until - since) / length > MAX_WINDOWS:
            raise InputError(f"--window: {args.window} makes more than {MAX_WINDOWS} trend "
                             "windows in this range; use a longer one", field="--window")
        costs = h.UnitCosts(rule=_cost(args.rule_cost, "--rule-cost"),
                            judge=_cost(args.judge_cost, "--judge-cost"),
                            human=_cost(args.human_cost, "--human-cost"))
        engine = make_engine(Settings().resolved_database_url())
        init_store(engine)
        with session_scope(engine) as session:
            data = load_health_data(session=session, since=since, until=until,
                                    task_type=args.task_type)
            last = last_recalibration(session)
        engine.dispose()
        report = build_report(data, now=now, window=length, costs=costs,
                              last_recalibration=last[0] if last else None,
                              reviews_used=last[1] if last else None)
    except HANDLED as exc:
        return exit_code("hitl metrics", exc)
    if args.json:
        print(json.dumps(report_as_dict(report), indent=2))
    else:
        print(render_report(report))
    return 0


def parse_moment(text: str, flag: str, *, end: bool) -> datetime:
    """An aware UTC datetime; a bare date as --until means the end of that day.
    ``hitl export`` reads its range the same way."""
    try:
        if len(text) == 10:
            day = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
            return day + timedelta(days=1) if end else day
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{flag}: not an ISO date or datetime: {text!r}", field=flag) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _positive(value: float, flag: str) -> float:
    if not value > 0 or value == float("inf"):
        raise InputError(f"{flag}: must be a positive number, got {value:g}", field=flag)
    return value


def _cost(value: float, flag: str) -> float:
    if not 0 <= value < float("inf"):
        raise InputError(f"{flag}: must be a non-negative amount, got {value:g}", field=flag)
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise InputError(message)
