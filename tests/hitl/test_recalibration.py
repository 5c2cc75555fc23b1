"""The feedback loop's maths on hand-computed examples, and the label reader on both stores."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from activities.recalibration import load_labels
from hitl.calibration import clopper_pearson_upper
from hitl.enums import RiskLevel
from hitl.policy import load_policy
from hitl.recalibration import (
    Label,
    PolicyDiff,
    RecalibrationBounds,
    RecalibrationConfig,
    bound_violations,
    feedback_usage,
    gate_context,
    proposal_record,
    recalibrate,
    render_diff,
    within_bounds,
)
from hitl.store import AuditRow, DecisionRecord, ReviewRow

NOW = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=90)
CONFIG = RecalibrationConfig()
POLICY = load_policy()


def labels(task_type: str, confidence: float, count: int, wrong: int = 0,
           risk: RiskLevel = RiskLevel.LOW) -> list[Label]:
    return [Label(confidence=confidence, correct=i >= wrong, task_type=task_type, risk=risk,
                  source="review") for i in range(count)]


def run(data: Iterable[Label], config: RecalibrationConfig = CONFIG):  # type: ignore[no-untyped-def]
    return recalibrate(list(data), POLICY, config=config, version="recal-test",
                       since=SINCE, until=NOW)


# ------------------------------------------------------------------ certify

def test_tightens_where_the_current_bar_lets_errors_through() -> None:
    # 300 right at 0.95, 200 at 0.85 of which 40 wrong. Candidates are hundredths,
    # strictest first, entered where 149 decisions sit above (K = 1 for n = 500):
    # 0.95 .. 0.86 hold the 300 error-free ones and pass; 0.85 holds 40 errors in
    # 500 (8%) and fails. So 0.86, automating 300/500, none wrong.
    result = run(labels("ticket_classification", 0.95, 300)
                 + labels("ticket_classification", 0.85, 200, wrong=40))
    [entry] = result.diff.entries  # the type has its own bar: no risk-level scope
    assert (entry.kind, entry.name, entry.old, entry.new, entry.certified) == (
        "task_type", "ticket_classification", 0.80, 0.86, 0.86)
    assert (entry.n, entry.old_automation, entry.new_automation) == (500, 1.0, 0.6)
    assert (entry.old_error, entry.new_error) == (0.08, 0.0)
    assert entry.old_error_bound == pytest.approx(clopper_pearson_upper(40, 500, 0.05))
    # Zero errors in 300: the Clopper-Pearson bound is 1 - delta ** (1 / 300), about 0.99%.
    assert entry.new_error_bound == pytest.approx(1 - 0.05 ** (1 / 300))
    assert result.policy is not None
    assert result.policy.thresholds.task_types["ticket_classification"] == 0.86
    assert result.policy.version == "recal-test"
    untouched = result.policy.model_dump(exclude={"version", "thresholds"})
    assert untouched == POLICY.model_dump(exclude={"version", "thresholds"})
    assert bound_violations(result.diff, CONFIG.bounds) == [
        "ticket_classification: moves 0.06 (0.80 -> 0.86), more than 0.02"]
    assert not within_bounds(result.diff, CONFIG.bounds)


def test_a_small_certified_move_is_within_bounds() -> None:
    # 300 right at 0.82; 0.81 adds 100 with 30 wrong (7.5% of 400): 0.82 it is.
    result = run(labels("ticket_classification", 0.82, 300)
                 + labels("ticket_classification", 0.81, 100, wrong=30))
    [entry] = result.diff.changes
    assert (entry.old, entry.new, entry.new_automation) == (0.80, 0.82, 0.75)
    assert within_bounds(result.diff, CONFIG.bounds)
    assert not within_bounds(result.diff, RecalibrationBounds(max_step=0.01))
    assert bound_violations(result.diff, RecalibrationBounds(auto_apply=False)) == [
        "auto-apply is off"]


def test_too_few_labels_keep_the_bar_and_change_nothing() -> None:
    # 149 error-free decisions are the least that can certify 2% at 95%; 50 cannot.
    result = run(labels("ticket_classification", 0.9, 50))
    [entry] = result.diff.entries
    assert (entry.old, entry.new, entry.certified) == (0.80, 0.80, None)
    assert entry.note.startswith("kept: too few labels (about ")
    assert result.policy is None and result.diff.changes == []


def test_no_threshold_meeting_the_target_sends_everything_to_a_person() -> None:
    result = run(labels("ticket_classification", 0.95, 400, wrong=200))
    [entry] = result.diff.changes
    assert (entry.new, entry.certified, entry.new_automation) == (1.0, None, 0.0)
    assert result.policy is not None
    assert result.policy.thresholds.task_types["ticket_classification"] == 1.0
    problems = bound_violations(result.diff, CONFIG.bounds)
    assert "ticket_classification: 1.00 is not a certified threshold" in problems
    assert len(problems) == 2  # and the 0.20 move


def test_risk_level_bars_use_the_decisions_they_judge() -> None:
    # refund_request has no bar of its own: the medium bar (0.85) judged it. 300
    # right at 0.90 and 100 at 0.80 with 30 wrong certify 0.81 for both scopes.
    result = run(labels("refund_request", 0.90, 300, risk=RiskLevel.MEDIUM)
                 + labels("refund_request", 0.80, 100, wrong=30, risk=RiskLevel.MEDIUM))
    assert [(e.kind, e.name, e.old, e.new) for e in result.diff.entries] == [
        ("task_type", "refund_request", 0.85, 0.81), ("risk", "medium", 0.85, 0.81)]
    assert result.policy is not None
    assert result.policy.thresholds.task_types["refund_request"] == 0.81
    assert result.policy.thresholds.by_risk[RiskLevel.MEDIUM] == 0.81
    assert len(bound_violations(result.diff, CONFIG.bounds)) == 2  # two looser moves of 0.04


def test_critical_scopes_and_the_gate_itself_are_never_recalibrated() -> None:
    result = run(labels("medical_triage", 0.995, 400, risk=RiskLevel.CRITICAL)
                 + labels("policy_change", 0.0, 400, risk=RiskLevel.CRITICAL))
    assert result.diff.entries == [] and result.policy is None
    assert result.diff.feedback.labels == 400  # the gate's own reviews are not feedback


def test_a_critical_change_is_out_of_bounds_whatever_its_size() -> None:
    diff = run(labels("ticket_classification", 0.82, 300)
               + labels("ticket_classification", 0.81, 100, wrong=30)).diff
    critical = diff.entries[0].model_copy(update={"risk": RiskLevel.CRITICAL})
    forced = PolicyDiff(**{**diff.model_dump(), "entries": [critical.model_dump()]})
    assert bound_violations(forced, CONFIG.bounds) == [
        "ticket_classification: critical thresholds never change unattended"]


def test_feedback_usage_counts_reviews_corrections_and_audits() -> None:
    audit = Label(confidence=0.97, correct=True, task_type="content_moderation",
                  risk=RiskLevel.HIGH, source="audit")
    diff = run(labels("ticket_classification", 0.9, 20, wrong=3) + [audit] * 5).diff
    usage = diff.feedback
    assert (usage.labels, usage.reviews_used, usage.corrections_used, usage.audits_used) == (
        25, 20, 3, 5)
    stored = json.dumps(proposal_record(diff, violations=[], workflow_id="w"))
    assert feedback_usage(stored) == usage
    assert feedback_usage(None) is None and feedback_usage('{"note": 1}') is None


def test_the_diff_reads_as_a_table_with_figures_in_the_context() -> None:
    result = run(labels("ticket_classification", 0.95, 300)
                 + labels("ticket_classification", 0.85, 200, wrong=40))
    problems = bound_violations(result.diff, CONFIG.bounds)
    text = render_diff(result.diff, proposed_version="recal-test+abc", violations=problems)
    lines = text.splitlines()
    assert lines[0] == "Proposed policy recal-test+abc"
    header = next(line for line in lines if line.startswith("scope"))
    row = next(line for line in lines if line.startswith("ticket_classification "))
    assert row.index("0.80 -> 0.86") == header.index("threshold")
    assert "100.0% -> 60.0%" in row and "8.0% (<= " in row and "-> 0.0% (<= 1.0%)" in row
    assert "  - ticket_classification: moves 0.06 (0.80 -> 0.86), more than 0.02" in lines
    context = gate_context(result.diff, proposed_version="recal-test+abc")
    assert context["requested_by"] == "hitl-recalibration"
    assert str(context["threshold ticket_classification"]).startswith(
        "0.80 -> 0.86; automation 100.0% -> 60.0%")


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="max_error"):
        RecalibrationConfig(max_error=1.5)
    with pytest.raises(ValidationError, match="max_step"):
        RecalibrationBounds(max_step=-0.1)


# ------------------------------------------------------------------- store

def seed_reviews(engine: Engine, task_type: str, confidence: float, count: int, *,
                 wrong: int = 0, at: datetime, risk: str = "low") -> None:
    """Decided decisions, each with one accepted review: approved, or rejected (wrong)."""
    with Session(engine) as session:
        for i in range(count):
            decision_id = f"seed-{uuid.uuid4().hex[:12]}"
            session.add(DecisionRecord(
                decision_id=decision_id, task_type=task_type, zone="queue", risk=risk,
                status="rejected" if i < wrong else "executed", confidence=confidence,
                request_json="{}", state_json=json.dumps({"approvals_required": 1}),
                submitted_at=at, finished_at=at))
            session.add(ReviewRow(
                decision_id=decision_id, request_id="r1", task_type=task_type,
                reviewer="alice", verdict="reject" if i < wrong else "approve",
                model_confidence=confidence, zone="queue", risk=risk, reviewed_at=at))
        session.commit()


def test_labels_come_from_decisive_reviews_and_audit_verdicts(engine: Engine) -> None:
    at = NOW - timedelta(days=1)
    seed_reviews(engine, "ticket_classification", 0.7, 3, wrong=1, at=at)
    seed_reviews(engine, "ticket_classification", 0.7, 2, at=SINCE - timedelta(days=1))
    seed_reviews(engine, "policy_change", 0.0, 2, at=at, risk="critical")
    with Session(engine) as session:
        # Four-eyes: the first approval decides nothing, the edited second one decides
        # (wrong: an approver changed the output).
        session.add(DecisionRecord(
            decision_id="fe", task_type="refund_request", zone="escalate", risk="critical",
            status="executed", confidence=0.6, request_json="{}",
            state_json=json.dumps({"approvals_required": 2}), submitted_at=at))
        for n, edited in ((1, False), (2, True)):
            session.add(ReviewRow(decision_id="fe", request_id=f"r{n}", task_type="refund_request",
                                  reviewer=f"rev{n}", verdict="approve", edited=edited,
                                  model_confidence=0.6, risk="critical",
                                  reviewed_at=at + timedelta(minutes=n)))
        for name, verdict in (("a1", "approve"), ("a2", "reject"), ("a3", None)):
            session.add(AuditRow(decision_id=name, task_type="content_moderation", risk="high",
                                 confidence=0.96, sampled=True, sample_rate=0.2, verdict=verdict,
                                 created_at=at, reviewed_at=at if verdict else None))
        session.commit()
        found = load_labels(session=session, since=SINCE, until=NOW)
    summary = sorted((lb.source, lb.task_type, lb.confidence, lb.correct, lb.risk.value)
                     for lb in found)
    assert summary == [
        ("audit", "content_moderation", 0.96, False, "high"),
        ("audit", "content_moderation", 0.96, True, "high"),
        ("review", "refund_request", 0.6, False, "critical"),
        ("review", "ticket_classification", 0.7, False, "low"),
        ("review", "ticket_classification", 0.7, True, "low"),
        ("review", "ticket_classification", 0.7, True, "low"),
    ]
