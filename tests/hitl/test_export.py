"""``hitl export`` on SQLite and PostgreSQL: rows, labels, filters, redaction, paging
and atomicity, from decisions run through the workflow on the dev server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import ActivityEnvironment

from activities.store import StoreActivities
from hitl.audits import record_audit_verdict
from hitl.cascade import JudgeResult, Routing
from hitl.cli_export import run_export
from hitl.client import HitlClient
from hitl.enums import DecisionStatus, ErrorCategory, LayerStatus, RiskLevel, Verdict, Zone
from hitl.export import is_secret_key, redact, reviewed_decisions
from hitl.payloads import RecordDecisionInput, RecordReviewInput
from hitl.request import Action
from hitl.review import ApproveInput, RejectInput, ReviewRecord
from hitl.state import DecisionState
from hitl.store import DecisionRecord, session_scope
from tests.conftest import BIN, WorkerFactory, register_reviewers, test_policy
from tests.factories import make_request
from tests.reviewing import approve, reject

SECRETS = {"api_key": "sk-live-0123456789abcdefghij", "password": "hunter2",
           "auth_header": "Bearer eyJhbGciOi.secret", "nested": {"accessToken": "tok-123",
                                                                 "note": "kept"},
           "callback": "https://svc:pa55@hooks.example.com/done", "tags": ["a", "Bearer zzz"]}


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def export(engine: Engine, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``hitl export`` as a user runs it, in its own process."""
    return subprocess.run([str(BIN / "hitl"), "export", "--output", str(out), *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HITL_DATABASE_URL": url_of(engine)})


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def pending(hitl: HitlClient, decision_id: str) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    while (await hitl.status(decision_id)).status is not DecisionStatus.PENDING_REVIEW:
        assert asyncio.get_running_loop().time() < deadline, f"{decision_id} never waited"
        await asyncio.sleep(0.05)


async def test_export_of_decisions_decided_through_the_workflow(
        hitl_worker: WorkerFactory, engine: Engine, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if engine.dialect.name == "postgresql":  # on SQLite it is hitl_worker's store, registered
        register_reviewers(engine)
    policy = test_policy(audit={"sample_rate": 1.0})
    auto = make_request(confidence=0.95)
    approved = make_request(confidence=0.5)
    edited = make_request(confidence=0.5, output="billing")
    rejected = make_request(confidence=0.55, output="billing", context=SECRETS,
                            action={"params": {"label": "billing", "client_secret": "s3cr3t"}})
    audited = make_request(task_type="content_moderation", outcome="approve", confidence=0.97,
                           output="approve post",
                           action={"type": "approve_post", "params": {"post_id": "p1"}})
    async with hitl_worker(policy=policy, engine=engine) as hitl:
        assert (await hitl.decide(auto, timeout=20)).zone is Zone.AUTO
        for request in (approved, edited):
            await hitl.submit(request)
            await pending(hitl, request.decision_id)
        await approve(hitl, approved.decision_id, ApproveInput(reviewer="alice", reason="fine"))
        await approve(hitl, edited.decision_id, ApproveInput(
            reviewer="bob", reason="it is a crash report", output="technical",
            action=Action(type="set_label", params={"label": "technical"}, reversible=True)))
        for request in (approved, edited):
            await hitl.wait(request.decision_id, timeout=20)
        middle = datetime.now(UTC)
        await hitl.submit(rejected)
        await pending(hitl, rejected.decision_id)
        await reject(hitl, rejected.decision_id, RejectInput(
            reviewer="carol", reason="asks how to change the email", correct_answer="account",
            error_category=ErrorCategory.WRONG_LABEL))
        assert (await hitl.wait(rejected.decision_id, timeout=20)).status is (
            DecisionStatus.REJECTED)
        state = await hitl.decide(audited, timeout=20)
        assert (state.zone, state.audit_sampled) == (Zone.AUTO_AUDIT, True)
    with session_scope(engine) as session:
        record_audit_verdict(session=session, decision_id=audited.decision_id, reviewer="rita",
                             verdict=Verdict.REJECT, error_category=ErrorCategory.POLICY_VIOLATION)

    out = tmp_path / "reviewed.jsonl"
    result = export(engine, out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"exported 4 reviewed decisions to {out}"
    text = out.read_text()
    for secret in ("sk-live", "hunter2", "eyJhbGciOi", "tok-123", "pa55", "s3cr3t", "zzz"):
        assert secret not in text
    rows = {row["decision_id"]: row for row in rows_of(out)}
    assert list(rows) == [approved.decision_id, edited.decision_id, rejected.decision_id,
                          audited.decision_id]  # the AUTO one had no person: not exported

    a = rows[approved.decision_id]
    assert a["label"] == {"model_correct": True, "source": "review", "verdict": "approve",
                          "error_category": None, "corrected_output": None,
                          "corrected_action": None, "target_output": "billing"}
    assert (a["routing"]["zone"], a["routing"]["risk"], a["routing"]["threshold"]) == (
        "queue", "low", 0.8)
    assert a["routing"]["policy_version"] and a["routing"]["reasons"]
    assert [(v["reviewer"], v["verdict"], v["decisive"], v["reason"]) for v in a["verdicts"]] == [
        ("alice", "approve", True, "fine")]
    assert a["outcome"]["status"] == "executed" and a["request"]["confidence"] == 0.5

    e = rows[edited.decision_id]["label"]
    assert (e["model_correct"], e["corrected_output"], e["target_output"]) == (
        False, "technical", "technical")
    assert e["corrected_action"]["params"] == {"label": "technical"}
    assert rows[edited.decision_id]["verdicts"][0]["edited"] is True
    assert rows[edited.decision_id]["request"]["output"] == "billing"  # what the model said

    r = rows[rejected.decision_id]
    assert r["label"] == {"model_correct": False, "source": "review", "verdict": "reject",
                          "error_category": "wrong_label", "corrected_output": "account",
                          "corrected_action": None, "target_output": "account"}
    verdict = r["verdicts"][0]
    assert (verdict["reason"], verdict["correct_answer"], verdict["error_category"]) == (
        "asks how to change the email", "account", "wrong_label")
    context = r["request"]["context"]
    assert context["nested"] == {"note": "kept"} and context["tags"] == ["a"]
    assert context["callback"] == "https://hooks.example.com/done"
    assert context["requested_by"] == "svc-helpdesk" and context["ticket"]
    assert not {"api_key", "password", "auth_header"} & set(context)
    assert r["request"]["action"]["params"] == {"label": "billing"}
    assert r["outcome"]["status"] == "rejected"

    m = rows[audited.decision_id]
    assert m["label"] == {"model_correct": False, "source": "audit", "verdict": "reject",
                          "error_category": "policy_violation", "corrected_output": None,
                          "corrected_action": None, "target_output": None}
    assert [(v["source"], v["reviewer"], v["decisive"]) for v in m["verdicts"]] == [
        ("audit", "rita", True)]
    assert m["routing"]["zone"] == "auto_audit" and m["routing"]["risk"] == "high"

    # Filters, in-process: task type, and submission time on either side of ``middle``.
    monkeypatch.setenv("HITL_DATABASE_URL", url_of(engine))
    for args, expected in (
            (["--task-type", "content_moderation"], [audited]),
            (["--since", middle.isoformat()], [rejected, audited]),
            (["--until", middle.isoformat()], [approved, edited]),
            (["--since", middle.isoformat(), "--task-type", "ticket_classification"],
             [rejected]),
            (["--until", "2020-01-01"], [])):
        assert run_export(["--output", str(out), *args]) == 0
        assert [row["decision_id"] for row in rows_of(out)] == [
            request.decision_id for request in expected], args


def record(engine: Engine, decision_id: str, at: datetime, *, approvals: int = 1,
           status: DecisionStatus = DecisionStatus.EXECUTED) -> None:
    request = make_request(decision_id=decision_id, confidence=0.6)
    state = DecisionState(
        decision_id=decision_id, task_type=request.task_type, confidence=0.6, reversible=True,
        status=status, zone=Zone.QUEUE, risk=RiskLevel.LOW, policy_version="default-1+test",
        judge=JudgeResult(status=LayerStatus.SKIPPED), approvals_required=approvals,
        routing=Routing(zone=Zone.QUEUE, reasons=["confidence 0.600 < 0.80"]),
        final_output=request.output, submitted_at=at, finished_at=at + timedelta(minutes=1))
    ActivityEnvironment().run(StoreActivities(engine=engine).record_decision,
                              RecordDecisionInput(request=request, state=state))


def review(engine: Engine, decision_id: str, reviewer: str, verdict: Verdict, at: datetime,
           **fields: Any) -> None:
    ActivityEnvironment().run(StoreActivities(engine=engine).record_review, RecordReviewInput(
        decision_id=decision_id, task_type="ticket_classification", confidence=0.6,
        zone="queue", risk="low", review=ReviewRecord(
            request_id=f"{reviewer}-{decision_id}", reviewer=reviewer, verdict=verdict,
            received_at=at, latency_seconds=30.0, **fields)))


def test_pages_by_submission_time_and_skips_undecided(engine: Engine) -> None:
    """Seven decisions submitted at the same instant, read three at a time; a
    four-eyes decision with one approval and one with only a refused review have
    no human verdict and are left out."""
    at = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
    ids = [f"same-{i}" for i in (3, 0, 6, 1, 5, 2, 4)]
    for i, decision_id in enumerate(ids):
        record(engine, decision_id, at)
        review(engine, decision_id, "alice", Verdict.REJECT if i % 2 else Verdict.APPROVE,
               at + timedelta(minutes=1))
    record(engine, "half-approved", at - timedelta(hours=1), approvals=2,
           status=DecisionStatus.EXPIRED)
    review(engine, "half-approved", "alice", Verdict.APPROVE, at)
    record(engine, "refused-only", at - timedelta(hours=2), status=DecisionStatus.EXPIRED)
    review(engine, "refused-only", "mallory", Verdict.APPROVE, at, accepted=False,
           refusal="mallory may not decide low-risk decisions")
    record(engine, "later", at + timedelta(seconds=1))
    review(engine, "later", "bob", Verdict.APPROVE, at + timedelta(minutes=2), edited=True)
    with session_scope(engine) as session:
        rows = list(reviewed_decisions(session=session, page_size=3))
    assert [r.decision_id for r in rows] == [f"same-{i}" for i in range(7)] + ["later"]
    assert [r.label.model_correct for r in rows[:7]] == [
        ids.index(f"same-{i}") % 2 == 0 for i in range(7)]
    later = rows[-1].label  # edited, but what was delivered equals the output: no correction
    assert (later.model_correct, later.corrected_output, later.target_output) == (
        False, None, "billing")


def test_a_failure_leaves_the_old_file_and_no_temporary(engine: Engine, tmp_path: Path) -> None:
    at = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
    for i in range(3):
        record(engine, f"good-{i}", at + timedelta(minutes=i))
        review(engine, f"good-{i}", "alice", Verdict.APPROVE, at + timedelta(hours=1))
    with session_scope(engine) as session:  # a damaged record, read after the good ones
        session.add(DecisionRecord(
            decision_id="damaged", task_type="ticket_classification", zone="queue",
            status="executed", confidence=0.5, request_json="{}", state_json="{}",
            submitted_at=at + timedelta(hours=1)))
        session.commit()
    review(engine, "damaged", "alice", Verdict.APPROVE, at + timedelta(hours=2))
    out = tmp_path / "out" / "reviewed.jsonl"
    out.parent.mkdir()
    out.write_text("the previous export\n")

    result = export(engine, out)
    assert result.returncode == 1
    assert "decision damaged: stored record does not parse" in result.stderr
    assert "not changed" in result.stderr
    assert out.read_text() == "the previous export\n"
    assert [p.name for p in out.parent.iterdir()] == ["reviewed.jsonl"]  # no temporary left

    result = export(engine, out, "--until", "2026-04-02T10:00:00+00:00")  # before the damage
    assert result.returncode == 0, result.stderr
    assert [row["decision_id"] for row in rows_of(out)] == ["good-0", "good-1", "good-2"]


@pytest.mark.parametrize(("args", "message"), [
    ([], "the following arguments are required: --output"),
    (["--output", "{out}", "--since", "yesterday"],
     "--since: not an ISO date or datetime: 'yesterday'"),
    (["--output", "{out}", "--since", "2026-03-05", "--until", "2026-03-01"],
     "--since 2026-03-05T00:00:00+00:00 is not before --until 2026-03-02T00:00:00+00:00"),
    (["--output", "{tmp}/missing/x.jsonl"], "--output: directory '{tmp}/missing' does not exist"),
    (["--output", "{tmp}"], "--output: '{tmp}' is a directory"),
    (["--output", "{out}", "--task-type"], "argument --task-type: expected one argument"),
])
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")
    out = tmp_path / "x.jsonl"
    fill = {"out": str(out), "tmp": str(tmp_path)}
    assert run_export([a.format(**fill) for a in args]) == 2
    err = capsys.readouterr().err
    assert err == f"hitl export: error: {message.format(**fill)}\n"
    assert not out.exists() and not (tmp_path / "never.db").exists()


def test_redaction_rules() -> None:
    assert all(map(is_secret_key, ["password", "apiKey", "X-Api-Key", "client_secret",
                                   "refresh_token", "Authorization", "db_passwords", "ssn"]))
    assert not any(map(is_secret_key, ["author", "tokenizer_name", "amount", "order_id",
                                       "requested_by", "pinned", "session_length_days"]))
    assert redact({"url": "http://a:b@h:8080/p?q=1", "list": [{"token": 1}, "sk-x"],
                   "v": "basic dXNlcjpwdw=="}) == {
        "url": "http://h:8080/p?q=1", "list": [{}, "sk-x"]}
    # Found in review: other schemes, signed query strings, more credential shapes and keys.
    assert redact({"db": "postgresql://app:pw@db:5432/x", "cache": "redis://:pw@h/0",
                   "blob": "https://s.example/f.png?X-Amz-Signature=abc&size=2&sig=s1",
                   "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2ln", "aws": "AKIA"
                   + "A" * 16, "gh": "ghp_" + "a" * 30, "slack": "xoxb-1234-abcdefghij",
                   "dsn": "anything", "webhook_url": "https://hooks.example/T/B/x",
                   "note": "plain text stays", "amount": 12}) == {
        "db": "postgresql://db:5432/x", "cache": "redis://h/0",
        "blob": "https://s.example/f.png?size=2", "note": "plain text stays", "amount": 12}
