"""What screening adapts to live figures: the audit sample rate and, under load, low-risk bars.

Both are pure functions of the policy and a few counts, applied by the rules
activity on top of ``hitl.policy.assess``; their result is the assessment that
history records, so a decision keeps the rate and the bar it was screened with
(the audit coin toss itself stays in the workflow). The two store queries that
feed them are at the end; ``hitl.policy_versions.PolicySource`` caches them.

Adaptive audit sampling: a task type is audited at the higher rate (the larger
of ``audit.adaptive.new_rate`` and ``audit.sample_rate``) until it has
``min_audits`` verdicts, again as soon as its latest ``recent`` audits find
more than ``recent_max_errors`` errors or its error rate over the last
``window`` audits exceeds ``max_error_rate``, and at ``stable_rate`` otherwise.
The adaptive layer only lowers the rate for a task type that has earned it.

Load shedding: with more than ``load_shedding.queue_depth`` reviews waiting, a
LOW-risk decision's bar drops by at most ``max_relaxation`` and never below the
task type's certified floor; without a floor nothing is relaxed. Medium, high
and critical risk are never touched.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, and_, case, func
from sqlmodel import Session, col, select

from hitl.cascade import Assessment
from hitl.enums import RiskLevel, Verdict
from hitl.policy import AdaptiveAuditConfig, LoadSheddingConfig, Policy
from hitl.review_queue import ReviewQueueRow
from hitl.store import AuditRow

# Thresholds are compared with ``>=``; rounding keeps 0.85 - 0.05 at 0.80, not 0.7999...
_DIGITS = 6


class AuditStats(BaseModel):
    """Audit verdicts of one task type: all of them, the last ``window``, the last ``recent``."""

    model_config = ConfigDict(frozen=True)

    audited: int = Field(ge=0)
    window: int = Field(default=0, ge=0)
    window_errors: int = Field(default=0, ge=0)
    recent: int = Field(default=0, ge=0)
    recent_errors: int = Field(default=0, ge=0)


class SampleRate(BaseModel):
    model_config = ConfigDict(frozen=True)

    rate: float = Field(ge=0.0, le=1.0)
    reason: str


def adaptive_sample_rate(stats: AuditStats | None, *, base_rate: float,
                         config: AdaptiveAuditConfig) -> SampleRate:
    """The AUTO_AUDIT sample rate for a task type with these audit statistics.

    ``stats`` None means no audit of the task type has a verdict yet.
    """
    if not config.enabled:
        return SampleRate(rate=base_rate, reason=f"fixed audit rate {base_rate:.1%}")
    high = max(config.new_rate, base_rate)
    audited = stats.audited if stats else 0
    if stats is None or audited < config.min_audits:
        return SampleRate(rate=high, reason=f"new task type: {audited} of "
                                            f"{config.min_audits} audits, {high:.1%}")
    if stats.recent_errors > config.recent_max_errors:
        return SampleRate(rate=high, reason=f"recent audits found errors: {stats.recent_errors} "
                                            f"in the last {stats.recent}, {high:.1%}")
    error_rate = stats.window_errors / stats.window if stats.window else 0.0
    if error_rate > config.max_error_rate:
        return SampleRate(rate=high, reason=f"audit error rate {error_rate:.1%} > "
                                            f"{config.max_error_rate:.1%} over the last "
                                            f"{stats.window}, {high:.1%}")
    return SampleRate(rate=config.stable_rate,
                      reason=f"stable: {audited} audits, error rate {error_rate:.1%} <= "
                             f"{config.max_error_rate:.1%}, {config.stable_rate:.1%}")


def shed_threshold(*, threshold: float, risk: RiskLevel, task_type: str,
                   queue_depth: int | None, config: LoadSheddingConfig) -> tuple[float, str | None]:
    """The bar after load shedding, and the note that says why (None when unchanged
    because there is no backlog or the risk is not low)."""
    if (not config.enabled or risk is not RiskLevel.LOW or queue_depth is None
            or queue_depth <= config.queue_depth):
        return threshold, None
    over = f"load shedding: queue {queue_depth:,} > {config.queue_depth:,}"
    floor = config.floors.get(task_type, config.default_floor)
    if floor is None:
        return threshold, f"{over}, no certified floor for {task_type}: threshold kept"
    # Rounded up, never down: rounding must not relax past the band (1 - 0.0859375
    # rounds to 0.914062, a relaxation of 0.085938).
    step = 10 ** _DIGITS
    relaxed = max(math.ceil((threshold - config.max_relaxation) * step - 1e-6) / step, floor)
    if relaxed >= threshold:
        return threshold, f"{over}, threshold {threshold:.2f} already at its floor {floor:.2f}"
    return relaxed, f"{over}, threshold {threshold:.2f} -> {relaxed:.2f}"


def adapt(assessment: Assessment, *, task_type: str, policy: Policy,
          audit_stats: dict[str, AuditStats], queue_depth: int | None) -> Assessment:
    """``assessment`` with the adaptive audit rate and any load shedding applied.

    The load-shedding note goes into ``threshold_source``, so the routing
    reasons (``confidence 0.78 >= 0.75 (task type ...; load shedding: ...)``)
    and the review page say why the bar was lower.
    """
    rate = adaptive_sample_rate(audit_stats.get(task_type), base_rate=policy.audit.sample_rate,
                                config=policy.audit.adaptive)
    threshold, note = shed_threshold(
        threshold=assessment.threshold, risk=assessment.risk, task_type=task_type,
        queue_depth=queue_depth, config=policy.load_shedding)
    source = assessment.threshold_source + (f"; {note}" if note else "")
    return assessment.model_copy(update={
        "audit_sample_rate": rate.rate, "threshold": threshold, "threshold_source": source})


# ------------------------------------------------------------------- queries

def audit_stats(*, session: Session, window: int, recent: int) -> dict[str, AuditStats]:
    """Per task type: audits with a verdict, and the errors among the latest ones.

    One grouped query over the reviewed audits (the sampled share of AUTO_AUDIT
    decisions that an auditor has judged); an audit is an error when rejected.
    """
    reviewed = col(AuditRow.verdict).is_not(None)
    rank = func.row_number().over(
        partition_by=col(AuditRow.task_type),
        order_by=(col(AuditRow.reviewed_at).desc(), col(AuditRow.decision_id).desc()))
    ranked = select(col(AuditRow.task_type).label("task_type"),
                    col(AuditRow.verdict).label("verdict"),
                    rank.label("rank")).where(reviewed).subquery()
    error = ranked.c.verdict == Verdict.REJECT.value

    def within(limit: int, errors_only: bool = False) -> ColumnElement[Any]:
        condition = ranked.c.rank <= limit
        if errors_only:
            condition = and_(condition, error)
        return func.sum(case((condition, 1), else_=0))

    rows = session.exec(select(  # type: ignore[call-overload]  # six columns: no overload
        ranked.c.task_type, func.count(), within(window), within(window, errors_only=True),
        within(recent), within(recent, errors_only=True)).group_by(ranked.c.task_type)).all()
    return {task_type: AuditStats(audited=int(total), window=int(in_window or 0),
                                  window_errors=int(window_errors or 0),
                                  recent=int(in_recent or 0),
                                  recent_errors=int(recent_errors or 0))
            for task_type, total, in_window, window_errors, in_recent, recent_errors in rows}


def review_backlog(*, session: Session) -> int:
    """Decisions waiting for a person (pending review or provisional, not yet decided)."""
    count = session.exec(select(func.count()).select_from(ReviewQueueRow).where(
        col(ReviewQueueRow.waiting).is_(True))).one()
    return int(count)
