"""The store reader on SQLite and PostgreSQL, and ``hitl metrics`` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hitl.cli_metrics import build_report, report_as_dict
from hitl.export import reviewed_decisions
from hitl.health_store import load_health_data
from hitl.review_queue import ReviewQueueRow
from hitl.store import AuditRow, DecisionRecord, ReviewRow, init_store, make_engine, session_scope
from tests.conftest import BIN

SINCE = datetime(2026, 3, 1, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=28)
DECIDED = "decision {} is already decided (executed)"


def add_decision(session: Session, decision_id: str, task_type: str, zone: str | None,
                 at: datetime, *, status: str = "executed", judge: str | None = "passed",
                 approvals: int = 1) -> None:
    state = {"decision_id": decision_id, "approvals_required": approvals,
             "judge": None if judge is None else {"status": judge, "reasons": []}}
    session.add(DecisionRecord(
        decision_id=decision_id, task_type=task_type, zone=zone, risk="medium", status=status,
        confidence=0.8, request_json="{}", state_json=json.dumps(state), submitted_at=at,
        finished_at=at + timedelta(hours=1)))


def add_review(session: Session, decision_id: str, task_type: str, reviewer: str,
               verdict: str, at: datetime, **fields: Any) -> None:
    session.add(ReviewRow(
        decision_id=decision_id, request_id=f"{reviewer}-{at.timestamp()}", task_type=task_type,
        reviewer=reviewer, verdict=verdict, model_confidence=0.6, reviewed_at=at, **fields))


def add_queue_entry(session: Session, decision_id: str, task_type: str, at: datetime, *,
                    waiting: bool = False) -> None:
    session.add(ReviewQueueRow(
        decision_id=decision_id, task_type=task_type, zone="escalate", risk="high",
        status="pending_review" if waiting else "executed", confidence=0.6, priority=1,
        escalated_at=at, waiting=waiting, version=2))


def fill_scenario(engine: Engine) -> None:
    """Four weeks of two task types, with figures worked out by hand in the tests.

    ticket_classification, per week: 14 auto, 6 queue (30%); alice approves every
    queued one unchanged, latencies 30 s, 60 s, ... 720 s over the four weeks; the
    judge ran on the auto ones only (rules failed first on the queued ones).

    refund_request, per week: 3 auto_audit (all sampled; of the 12, one audit says
    reject, nine approve, two await a verdict) and 6 escalate. Of the 24 escalated,
    #20-23 expired unreviewed; bob decided #0-19 (latency 100 s x (j + 1)):
    #0-9 approve, #10-13 approve edited, #14-17 reject with an answer and category
    wrong_amount, #18-19 reject with category "other" only. carol gave a second
    opinion on each, refused as already decided: approve on #0-7 and #14-16.
    The escalations are in the review queue table too, with three more that still
    wait (no decision record yet); ticket_classification's queued decisions
    predate the queue table, so only their decision records show them.
    """
    with Session(engine) as session:
        for week in range(4):
            start = SINCE + timedelta(days=7 * week, hours=1)
            for i in range(20):
                did, at = f"tc-{week}-{i}", start + timedelta(minutes=i)
                queued = i < 6
                add_decision(session, did, "ticket_classification", "queue" if queued else "auto",
                             at, judge="skipped" if queued else "passed")
                if queued:
                    latency = 30.0 * (week * 6 + i + 1)
                    add_review(session, did, "ticket_classification", "alice", "approve",
                               at + timedelta(seconds=latency), latency_seconds=latency)
            for i in range(9):
                did, at = f"rr-{week}-{i}", start + timedelta(hours=2, minutes=i)
                if i < 3:
                    add_decision(session, did, "refund_request", "auto_audit", at)
                    n = week * 3 + i
                    verdict = "reject" if n == 0 else None if n >= 10 else "approve"
                    session.add(AuditRow(decision_id=did, task_type="refund_request",
                                         risk="high", confidence=0.95, sampled=True,
                                         sample_rate=0.2, verdict=verdict, created_at=at))
                    continue
                j = week * 6 + i - 3
                add_decision(session, did, "refund_request", "escalate", at,
                             status="expired" if j >= 20 else "executed", judge="failed")
                add_queue_entry(session, did, "refund_request", at + timedelta(seconds=1))
                if j >= 20:
                    continue
                latency = 100.0 * (j + 1)
                reviewed = at + timedelta(seconds=latency)
                verdict = "approve" if j < 14 else "reject"
                add_review(session, did, "refund_request", "bob", verdict, reviewed,
                           latency_seconds=latency, edited=10 <= j < 14,
                           correct_answer="deny" if 14 <= j < 18 else None,
                           error_category=("wrong_amount" if 14 <= j < 18 else
                                           "other" if j >= 18 else None))
                add_review(session, did, "refund_request", "carol",
                           "approve" if j < 8 or 14 <= j < 17 else "reject",
                           reviewed + timedelta(minutes=1), accepted=False,
                           refusal=DECIDED.format(did), latency_seconds=latency + 60)
        for i in range(3):
            add_queue_entry(session, f"rr-waiting-{i}", "refund_request",
                            UNTIL - timedelta(hours=i + 1), waiting=True)
        session.commit()


# --------------------------------------------------------------- the reader

def test_window_bounds_task_type_and_judge_calls(engine: Engine) -> None:
    with Session(engine) as session:
        add_decision(session, "before", "a", "auto", SINCE - timedelta(seconds=1))
        add_decision(session, "first", "a", "queue", SINCE, judge="error")
        add_decision(session, "last", "a", "auto", UNTIL - timedelta(microseconds=1),
                     judge="skipped")
        add_decision(session, "no-judge", "a", None, SINCE + timedelta(days=1), judge=None)
        add_decision(session, "at-until", "a", "auto", UNTIL)
        add_decision(session, "other", "b", "auto", SINCE + timedelta(days=1))
        session.add(AuditRow(decision_id="first", task_type="a", risk="high", confidence=0.9,
                             sampled=True, sample_rate=0.2, verdict="reject", created_at=SINCE))
        session.add(AuditRow(decision_id="late", task_type="a", risk="high", confidence=0.9,
                             sampled=False, sample_rate=0.2, created_at=UNTIL))
        add_queue_entry(session, "first", "a", SINCE)
        add_queue_entry(session, "waits", "a", UNTIL - timedelta(seconds=1), waiting=True)
        add_queue_entry(session, "queued-late", "a", UNTIL, waiting=True)
        add_queue_entry(session, "queued-b", "b", SINCE)
        session.commit()
    with session_scope(engine) as session:
        data = load_health_data(session=session, since=SINCE, until=UNTIL, task_type="a")
        both = load_health_data(session=session, since=SINCE, until=UNTIL)
    assert [(d.decision_id, d.zone, d.judge_called) for d in data.decisions] == [
        ("first", "queue", True), ("no-judge", None, False), ("last", "auto", False)]
    assert data.decisions[0].submitted_at == SINCE  # aware UTC back from both databases
    assert [(x.decision_id, x.sampled, x.verdict) for x in data.audits] == [
        ("first", True, "reject")]
    assert [(q.decision_id, q.waiting) for q in data.queue] == [("first", False),
                                                                 ("waits", True)]
    assert both.task_types == ["a", "b"] and len(both.decisions) == 4 and len(both.queue) == 3


def test_decisive_reviews_read_the_whole_trail(engine: Engine) -> None:
    """A four-eyes decision approved across the window's start, a pending one, a refusal."""
    with Session(engine) as session:
        add_decision(session, "four-eyes", "t", "escalate", SINCE - timedelta(days=1),
                     approvals=2)
        add_review(session, "four-eyes", "t", "alice", "approve", SINCE - timedelta(hours=1),
                   edited=True)
        add_review(session, "four-eyes", "t", "bob", "approve", SINCE + timedelta(hours=1))
        # No decision record yet: alice's approval may be the first of two.
        add_review(session, "pending", "t", "alice", "approve", SINCE + timedelta(hours=2))
        add_review(session, "vetoed", "t", "alice", "approve", SINCE + timedelta(hours=3))
        add_review(session, "vetoed", "t", "bob", "reject", SINCE + timedelta(hours=4))
        add_decision(session, "single", "t", "queue", SINCE)
        add_review(session, "single", "t", "mallory", "approve", SINCE + timedelta(hours=5),
                   accepted=False, refusal="mallory is not a reviewer")
        add_review(session, "single", "t", "carol", "approve", SINCE + timedelta(hours=6))
        add_review(session, "outside", "t", "carol", "reject", UNTIL)
        session.commit()
    with session_scope(engine) as session:
        data = load_health_data(session=session, since=SINCE, until=UNTIL)
    assert [(r.decision_id, r.reviewer, r.decisive, r.outcome_edited) for r in data.reviews] == [
        ("four-eyes", "bob", True, True),  # alice's edit, before the window, still counts
        ("pending", "alice", False, False),
        ("vetoed", "alice", False, False), ("vetoed", "bob", True, False),
        ("single", "mallory", False, False), ("single", "carol", True, False)]


def test_scenario_figures_on_the_store(engine: Engine) -> None:
    fill_scenario(engine)
    with session_scope(engine) as session:
        data = load_health_data(session=session, since=SINCE, until=UNTIL)
        refunds = load_health_data(session=session, since=SINCE, until=UNTIL,
                                   task_type="refund_request")
    assert (len(data.decisions), len(data.reviews), len(data.audits), len(data.queue)) == (
        116, 64, 12, 27)
    assert refunds.task_types == ["refund_request"] and len(refunds.decisions) == 36
    report = build_report(data, now=UNTIL, window=timedelta(days=7))
    scopes = {s.scope: s for s in report.scopes}
    assert list(scopes) == ["refund_request", "ticket_classification", "all"]
    tc, rr, everything = scopes["ticket_classification"], scopes["refund_request"], scopes["all"]
    assert (tc.escalation.count, tc.escalation.total) == (24, 80)
    assert rr.model_agreement.value == 0.5 and everything.model_agreement.count == 34
    assert rr.reviewers.kappa.value == pytest.approx(0.0625)
    assert [w.rate.count for w in everything.trend] == [12, 12, 12, 12]


# ------------------------------------------------------------------ the CLI

def hitl_metrics(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "hitl"), "metrics", *args], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "HITL_DATABASE_URL": f"sqlite:///{db}"})


@pytest.fixture(scope="module")
def scenario_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("metrics") / "hitl.db"
    engine = make_engine(f"sqlite:///{db}")
    init_store(engine)
    fill_scenario(engine)
    engine.dispose()
    return db


def test_cli_json_reports_the_hand_computed_figures(scenario_db: Path) -> None:
    done = hitl_metrics("--json", "--since", "2026-03-01", "--until", "2026-03-28",
                        "--window", "7d", db=scenario_db)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["since"], report["until"]) == ("2026-03-01T00:00:00+00:00",
                                                  "2026-03-29T00:00:00+00:00")
    scopes = {s["scope"]: s for s in report["scopes"]}
    tc, rr, every = scopes["ticket_classification"], scopes["refund_request"], scopes["all"]

    assert tc["escalation"] == {"count": 24, "total": 80, "value": 0.3}
    assert tc["auto_resolve"]["value"] == 0.7
    assert rr["escalation"]["count"] == 24 and rr["escalation"]["total"] == 36
    assert every["escalation"]["value"] == pytest.approx(48 / 116)

    # Audits: 1 reject in 10 verdicts; exact 95%: Beta(.025; 1, 10), Beta(.975; 2, 9).
    escape = rr["error_escape"]
    assert (escape["count"], escape["total"], escape["value"]) == (1, 10, 0.1)
    assert escape["lower"] == pytest.approx(0.0025285785, rel=1e-6)
    assert escape["upper"] == pytest.approx(0.4450161170, rel=1e-6)
    assert escape["method"] == "clopper-pearson" and rr["audits_awaiting_verdict"] == 2
    assert tc["error_escape"]["value"] is None

    # tc latencies 30..720 s: p50 at rank 11.5 = (360 + 390) / 2; p95 at 21.85 = 660 + 0.85 * 30.
    assert tc["latency"] == {"p50": 375.0, "p95": pytest.approx(685.5), "n": 24}
    # rr 100..2000 s: p50 (1000 + 1100) / 2; p95 at rank 18.05 = 1900 + 0.05 * 100.
    assert rr["latency"] == {"p50": 1050.0, "p95": pytest.approx(1905.0), "n": 20}
    # All 44: sorted[21] = 510, sorted[22] = 540; p95 at 40.85: 1700 + 0.85 * 100.
    assert every["latency"] == {"p50": 525.0, "p95": pytest.approx(1785.0), "n": 44}

    assert tc["model_agreement"] == {"count": 24, "total": 24, "value": 1.0}
    assert rr["model_agreement"] == {"count": 10, "total": 20, "value": 0.5}
    # bob/carol pairs: A/A 8, A/R 6, R/A 3, R/R 3. p_o = 11/20 = .55; bob A .7, carol A .55:
    # p_e = .7 * .55 + .3 * .45 = .52; kappa = .03 / .48 = .0625.
    # alpha: 40 ratings, 25 A, 15 R; 9 split decisions x 2 = 18; 1 - 39 * 18 / 750 = .064.
    kappa, alpha = rr["reviewers"]["kappa"], rr["reviewers"]["alpha"]
    assert (kappa["value"], kappa["n"]) == (pytest.approx(0.0625), 20)
    assert (alpha["value"], alpha["n"]) == (pytest.approx(0.064), 20)
    assert rr["reviewers"]["pair_agreement"]["count"] == 11
    assert tc["reviewers"]["kappa"] == {"value": None, "n": 0,
                                        "reason": "only 0 reviewer pairs, need 10"}

    # 10 corrections: 4 edits and 4 answered rejects have an answer, 4 a category: 8 structured.
    fb = rr["feedback"]
    assert (fb["corrections"], fb["with_answer"], fb["with_category"]) == (10, 8, 4)
    assert fb["structured"]["value"] == 0.8 and fb["last_recalibration"] is None

    # Judge calls: tc's 56 auto; rr all 36 (failed and passed both ran). Humans: accepted only.
    assert tc["cost"]["judge_calls"] == 56 and tc["cost"]["human_reviews"] == 24
    assert tc["cost"]["total"] == pytest.approx(56 * 0.005 + 24)
    assert rr["cost"]["per_decision"] == pytest.approx((36 * 0.005 + 20) / 36)
    assert every["cost"]["per_decision"] == pytest.approx((92 * 0.005 + 44) / 116)
    # 24 escalated and recorded (also in the queue table) + 3 waiting; tc's 24 are recorded only.
    assert rr["backlog"] == {"arrivals": 27, "reviewed": 20, "waiting": 3, "unreviewed": 4}
    assert tc["backlog"] == {"arrivals": 24, "reviewed": 24, "waiting": 0, "unreviewed": 0}
    assert [w["rate"]["value"] for w in tc["trend"]] == [0.3] * 4

    alerts = [(a["severity"], a["scope"], a["code"]) for a in report["alerts"]]
    assert alerts == [
        ("critical", "refund_request", "low_agreement"),
        ("critical", "refund_request", "review_bottleneck"),
        ("critical", "all", "low_agreement"),
        ("critical", "all", "review_bottleneck"),
        ("warning", "refund_request", "error_escape_high"),
        ("warning", "ticket_classification", "escalation_not_falling"),
        ("warning", "ticket_classification", "approved_unchanged"),
        ("warning", "all", "escalation_not_falling"),
        ("warning", "all", "error_escape_high"),
    ]
    low = report["alerts"][0]
    assert "inconsistent with each other (kappa 0.06 on 20 pairs" in low["message"]


def test_cli_text_costs_task_type_and_bad_input(scenario_db: Path) -> None:
    done = hitl_metrics("--since", "2026-03-01", "--until", "2026-03-28", "--task-type",
                        "refund_request", "--human-cost", "2", db=scenario_db)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "refund_request: 36 decisions" in text and "ticket_classification" not in text
    assert "66.7% (24/36)" in text
    # 36 judge calls * $0.005 + 20 reviews * $2 = $40.18, $1.1161 per decision.
    assert "$1.1161/decision, $40.18 total" in text
    assert "CRITICAL refund_request  review_bottleneck" in text

    bad = hitl_metrics("--since", "2026-02-30", db=scenario_db)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == "hitl metrics: error: --since: not an ISO date or datetime: " \
                         "'2026-02-30'\n"
    reversed_window = hitl_metrics("--since", "2026-03-28", "--until", "2026-03-01",
                                   db=scenario_db)
    assert reversed_window.returncode == 2 and reversed_window.stderr.count("\n") == 1
    too_fine = hitl_metrics("--days", "30", "--window", "1m", db=scenario_db)
    assert too_fine.returncode == 2 and "more than 1000 trend windows" in too_fine.stderr
    unknown = hitl_metrics("--weeks", "2", db=scenario_db)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1


def test_report_as_dict_is_json(engine: Engine) -> None:
    with session_scope(engine) as session:
        data = load_health_data(session=session, since=SINCE, until=UNTIL)
    report = report_as_dict(build_report(data, now=UNTIL, window=timedelta(days=7)))
    assert json.loads(json.dumps(report))["scopes"][0]["scope"] == "all"
    assert report["unit_costs"] == {"rule": 0.0, "judge": 0.005, "human": 1.0}


def test_cli_reports_the_last_recalibration_and_the_feedback_it_used(
        scenario_db: Path, tmp_path: Path) -> None:
    import shutil

    from hitl.policy import load_policy
    from hitl.policy_versions import propose

    db = tmp_path / "hitl.db"
    shutil.copy(scenario_db, db)
    engine = make_engine(f"sqlite:///{db}")
    feedback = {"labels": 60, "reviews_used": 30, "corrections_used": 4, "audits_used": 10,
                "since": "2026-02-01T00:00:00+00:00", "until": "2026-03-20T00:00:00+00:00"}
    with Session(engine) as session:
        row = propose(session, load_policy().model_copy(update={"version": "recal-test"}),
                      source="recalibration", proposal={"diff": {"feedback": feedback}})
        stored_at = row.created_at
    engine.dispose()

    done = hitl_metrics("--json", "--since", "2026-03-01", "--until", "2026-03-28",
                        "--window", "7d", db=db)
    assert done.returncode == 0, done.stderr
    scopes = {s["scope"]: s for s in json.loads(done.stdout)["scopes"]}
    fb = scopes["refund_request"]["feedback"]
    # 4 corrections used of refund_request's 8 structured ones.
    assert fb["used_share"] == pytest.approx(0.5)
    assert datetime.fromisoformat(fb["last_recalibration"]) == stored_at.replace(tzinfo=UTC)
    assert fb["days_since_recalibration"] is not None and fb["days_since_recalibration"] >= 0


READERS: dict[str, Callable[[Session], object]] = {
    "health": lambda session: load_health_data(session=session, since=SINCE, until=UNTIL),
    "export": lambda session: list(reviewed_decisions(session=session, since=SINCE,
                                                      until=UNTIL)),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_the_window_reads_indexes_not_whole_tables(reader: str, tmp_path: Path) -> None:
    """Every query of the store's window readers (``hitl metrics`` and the dashboard;
    ``hitl export``) reads an index range or looks rows up by key, never the whole
    table, whose scan grows with the store (one day's window over 100,000 decisions:
    71 ms scanning, 35 ms by the index). SQLite's plan for the statements the reader
    actually sends, with their parameters."""
    engine = make_engine(f"sqlite:///{tmp_path / 'plans.db'}")
    init_store(engine)
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    with Session(engine) as session:
        READERS[reader](session)
    event.remove(engine, "before_cursor_execute", capture)
    assert sent
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        for statement, parameters in sent:
            plan = [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
            assert not [step for step in plan if step.startswith("SCAN")], (statement, plan)
    engine.dispose()
