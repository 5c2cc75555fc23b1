"""The health dashboard: ``hitl metrics`` for the review app, with trends.

``GET /api/dashboard`` computes the same report as ``hitl metrics``
(``hitl.cli_metrics.build_report`` over ``hitl.health_store``) for a range of
whole buckets (hours, days or weeks, ending at the bucket boundary after
``until``), plus each bucket's figures for the trend plots and the alerts of
``hitl.alerts``. The escalation-trend alert reads the same buckets the page
plots. ``GET /dashboard`` is the page (``static/dashboard.html``).
"""

from __future__ import annotations

import asyncio
import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.engine import Engine

from hitl import health as h
from hitl.alerts import Alert
from hitl.api.auth import CurrentReviewer
from hitl.api.deps import Services, get_services
from hitl.cli_metrics import ALL, build_report, last_recalibration
from hitl.health_store import HealthData, load_health_data
from hitl.store import session_scope

PAGE = Path(__file__).parent / "static" / "dashboard.html"
MAX_BUCKETS = 400
# Any date-time is a valid ``until``; the range is clamped so that the bucket arithmetic
# stays inside datetime's years 1..9999 (a fuzzed 9999-12-31 or 0001-01-01 was a 500).
EARLIEST_UNTIL, LATEST_UNTIL = datetime(1971, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)

T = TypeVar("T")


class Bucket(StrEnum):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"

    @property
    def length(self) -> timedelta:
        return {"hour": timedelta(hours=1), "day": timedelta(days=1),
                "week": timedelta(weeks=1)}[self.value]


class DashboardQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: float = Field(default=30, gt=0, le=366, allow_inf_nan=False,
                        description="how far back, rounded up to whole buckets")
    bucket: Bucket = Field(default=Bucket.DAY, description="the trend plots' step")
    task_type: str | None = Field(default=None, min_length=1, max_length=64,
                                  description="only this task type (alerts too)")
    until: datetime | None = Field(
        default=None, description="end of the range (default now), rounded up to the bucket")

    @field_validator("until", mode="before")
    @classmethod
    def _not_a_timestamp(cls, value: object) -> object:
        """pydantic reads a number as Unix time; the schema says an ISO 8601 date-time."""
        try:
            float(str(value))
        except ValueError:
            return value
        raise ValueError("must be an ISO 8601 date-time (2026-11-21T09:30:00Z), not a number")

    @model_validator(mode="after")
    def _few_enough_buckets(self) -> DashboardQuery:
        count = math.ceil(self.days * 86400 / self.bucket.length.total_seconds())
        if count > MAX_BUCKETS:
            raise ValueError(f"bucket: {self.days:g} days in {self.bucket.value} buckets is "
                             f"{count} buckets, more than {MAX_BUCKETS}; pick a longer bucket")
        return self


# ----------------------------------------------------------------- response

class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RateOut(_Out):
    count: int
    total: int
    value: float | None


class EstimateOut(RateOut):
    lower: float | None
    upper: float | None
    confidence: float
    method: str


class LatencyOut(_Out):
    p50: float | None
    p95: float | None
    n: int


class StatisticOut(_Out):
    value: float | None
    n: int
    reason: str | None = None


class AgreementOut(_Out):
    kappa: StatisticOut
    alpha: StatisticOut
    pair_agreement: RateOut


class FeedbackOut(_Out):
    corrections: int
    with_answer: int
    with_category: int
    structured: RateOut
    days_since_recalibration: float | None


class CostOut(_Out):
    decisions: int
    judge_calls: int
    human_reviews: int
    total: float
    per_decision: float | None
    human_share: float | None


class BacklogOut(_Out):
    arrivals: int
    reviewed: int
    waiting: int
    unreviewed: int


class Headline(_Out):
    """Every metric over the whole range, for one task type or all."""

    scope: str
    decisions: int
    escalation: RateOut
    auto_resolve: RateOut
    error_escape: EstimateOut
    audits_awaiting_verdict: int
    latency: LatencyOut
    model_agreement: RateOut
    reviewers: AgreementOut
    feedback: FeedbackOut
    cost: CostOut
    backlog: BacklogOut


class TrendPoint(BaseModel):
    """One bucket, ``since <= t < until``, by the same clocks as the headline."""

    since: datetime
    until: datetime
    decisions: int
    reviews: int = Field(description="accepted reviews in the bucket")
    arrivals: int = Field(description="decisions that reached the review gate")
    escalation: RateOut
    auto_resolve: RateOut
    error_escape: EstimateOut
    latency: LatencyOut
    model_agreement: RateOut
    cost_per_decision: float | None


class AlertOut(_Out):
    code: str
    severity: str
    scope: str
    message: str
    action: str


class UnitCostsOut(_Out):
    rule: float
    judge: float
    human: float


class Dashboard(BaseModel):
    since: datetime
    until: datetime
    bucket: Bucket
    task_type: str | None
    task_types: list[str] = Field(description="task types with data in the range, to filter on")
    unit_costs: UnitCostsOut
    headline: Headline
    series: list[TrendPoint]
    alerts: list[AlertOut]
    generated_at: datetime


# ------------------------------------------------------------- computation

def bucket_range(query: DashboardQuery, now: datetime) -> tuple[datetime, datetime]:
    """Whole buckets covering ``days`` back from ``until`` rounded up to a bucket
    boundary (an hour, or midnight UTC for days and weeks)."""
    end = query.until or now
    end = end.replace(tzinfo=UTC) if end.tzinfo is None else end
    end = min(max(end, EARLIEST_UNTIL), LATEST_UNTIL).astimezone(UTC)  # clamp, then convert
    step = timedelta(hours=1) if query.bucket is Bucket.HOUR else timedelta(days=1)
    origin = datetime(2000, 1, 1, tzinfo=UTC)
    floor = origin + (end - origin) // step * step
    end = floor if floor == end else floor + step
    length = query.bucket.length
    count = math.ceil(query.days * 86400 / length.total_seconds())
    return end - count * length, end


def trend(data: HealthData, windows: Sequence[tuple[datetime, datetime]],
          costs: h.UnitCosts) -> list[TrendPoint]:
    """Each window's metrics; ``data``'s lists are sorted by their time fields."""
    points = []
    for since, until in windows:
        decisions = _between(data.decisions, since, until, lambda d: d.submitted_at)
        reviews = _between(data.reviews, since, until, lambda r: r.reviewed_at)
        audits = _between(data.audits, since, until, lambda a: a.created_at)
        queue = _between(data.queue, since, until, lambda q: q.escalated_at)
        points.append(TrendPoint(
            since=since, until=until, decisions=len(decisions),
            reviews=sum(r.accepted for r in reviews),
            arrivals=h.backlog(decisions, reviews, queue).arrivals,
            escalation=RateOut.model_validate(h.escalation_rate(decisions)),
            auto_resolve=RateOut.model_validate(h.auto_resolve_rate(decisions)),
            error_escape=EstimateOut.model_validate(h.error_escape_rate(audits)),
            latency=LatencyOut.model_validate(h.review_latency(reviews)),
            model_agreement=RateOut.model_validate(h.model_agreement(reviews)),
            cost_per_decision=h.decision_cost(decisions, reviews, costs).per_decision))
    return points


def _between(items: Sequence[T], since: datetime, until: datetime,
             key: Callable[[T], datetime]) -> Sequence[T]:
    return items[bisect_left(items, since, key=key):bisect_left(items, until, key=key)]


def build_dashboard(data: HealthData, query: DashboardQuery, *, now: datetime,
                    costs: h.UnitCosts | None = None,
                    recalibration: tuple[datetime, int] | None = None) -> Dashboard:
    """The dashboard of ``data`` (the whole range, every task type), filtered to
    ``query.task_type`` if given; ``recalibration`` is when the last one ran and how
    many corrections it used."""
    costs = costs or h.UnitCosts()
    part = data.for_task_type(query.task_type) if query.task_type else data
    length = query.bucket.length
    report = build_report(part, now=now, window=length, costs=costs,
                          last_recalibration=recalibration[0] if recalibration else None,
                          reviews_used=recalibration[1] if recalibration else None)
    scopes = {s.scope: s for s in report.scopes}
    # A task type with no data in the range still names itself, not "all".
    headline = Headline.model_validate(
        scopes.get(query.task_type or ALL) or scopes.get(ALL) or report.scopes[0])
    if query.task_type:
        headline.scope = query.task_type
    return Dashboard(
        since=data.since, until=data.until, bucket=query.bucket, task_type=query.task_type,
        task_types=data.task_types, unit_costs=UnitCostsOut.model_validate(costs),
        headline=headline,
        series=trend(part, h.tile_windows(data.since, data.until, length), costs),
        alerts=[AlertOut.model_validate(_alert(a)) for a in report.alerts],
        generated_at=now)


def _alert(alert: Alert) -> dict[str, str]:
    return {"code": alert.code, "severity": alert.severity.value, "scope": alert.scope,
            "message": alert.message, "action": alert.action}


def _load(engine: Engine, query: DashboardQuery) -> Dashboard:
    now = datetime.now(UTC)
    since, until = bucket_range(query, now)
    with session_scope(engine) as session:
        data = load_health_data(session=session, since=since, until=until)
        recalibration = last_recalibration(session)
    return build_dashboard(data, query, now=now, recalibration=recalibration)


# ------------------------------------------------------------------ routes

router = APIRouter(tags=["dashboard"])


@router.get("/api/dashboard", response_model=Dashboard,
            responses={401: {"description": "sign in"}})
async def dashboard(query: Annotated[DashboardQuery, Query()], reviewer: CurrentReviewer,
                    services: Annotated[Services, Depends(get_services)]) -> Dashboard:
    """The health metrics over the range (as ``hitl metrics`` computes them), one trend
    point per bucket, and the alerts with their diagnosis."""
    return await asyncio.to_thread(_load, services.engine, query)


@router.get("/dashboard", include_in_schema=False)
async def dashboard_page() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html")
