"""Audit verdicts on sampled AUTO_AUDIT decisions: written once, by an authorized reviewer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hitl.audits import pending_audits, record_audit_verdict
from hitl.enums import ErrorCategory, RiskLevel, Verdict
from hitl.errors import InputError, ReviewRefused
from hitl.store import AuditRow, init_store, make_engine, record_audit
from tests.conftest import BIN, register_reviewers


def _audit(engine: Engine, decision_id: str, *, sampled: bool = True,
           risk: str = "high") -> None:
    with Session(engine) as session:
        record_audit(session=session, audit=AuditRow(
            decision_id=decision_id, task_type="content_moderation", risk=risk,
            confidence=0.97, sampled=sampled, sample_rate=0.2))


def test_verdicts_are_written_once_by_an_authorized_reviewer(engine: Engine) -> None:
    register_reviewers(engine, ("auditor",), (RiskLevel.HIGH,))
    register_reviewers(engine, ("junior",), (RiskLevel.LOW,))
    _audit(engine, "a1")
    _audit(engine, "a2")
    _audit(engine, "not-sampled", sampled=False)
    with Session(engine) as session:
        assert [a.decision_id for a in pending_audits(session=session)] == ["a1", "a2"]
        with pytest.raises(ReviewRefused, match="may not decide high-risk"):
            record_audit_verdict(session=session, decision_id="a1", reviewer="junior",
                                 verdict=Verdict.APPROVE, error_category=None)
        with pytest.raises(ReviewRefused, match="unknown"):
            record_audit_verdict(session=session, decision_id="a1", reviewer="ghost",
                                 verdict=Verdict.APPROVE, error_category=None)
        with pytest.raises(InputError, match="error_category"):
            record_audit_verdict(session=session, decision_id="a1", reviewer="auditor",
                                 verdict=Verdict.REJECT, error_category=None)
        with pytest.raises(InputError, match="no audit record"):
            record_audit_verdict(session=session, decision_id="zzz", reviewer="auditor",
                                 verdict=Verdict.APPROVE, error_category=None)
        row = record_audit_verdict(session=session, decision_id="a1", reviewer="auditor",
                                   verdict=Verdict.REJECT,
                                   error_category=ErrorCategory.POLICY_VIOLATION)
        assert (row.verdict, row.error_category, row.reviewed_at is not None) == (
            "reject", "policy_violation", True)
        with pytest.raises(ReviewRefused, match="already has a verdict"):
            record_audit_verdict(session=session, decision_id="a1", reviewer="auditor",
                                 verdict=Verdict.APPROVE, error_category=None)
        assert [a.decision_id for a in pending_audits(session=session)] == ["a2"]


def test_audits_cli(tmp_path: Path) -> None:
    import subprocess

    engine = make_engine(f"sqlite:///{tmp_path / 'hitl.db'}")
    init_store(engine)
    register_reviewers(engine, ("auditor",))
    _audit(engine, "a1")
    env = {**os.environ, "HITL_DATA_DIR": str(tmp_path)}

    def hitl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "hitl"), *args], env=env, capture_output=True,
                              text=True, timeout=60)

    listed = hitl("audits", "pending", "--json")
    assert listed.returncode == 0 and [a["decision_id"] for a in json.loads(listed.stdout)] == [
        "a1"]
    bad = hitl("audits", "review", "a1", "--reviewer", "auditor", "--verdict", "reject",
               "--category", "nonsense")
    assert bad.returncode == 2 and bad.stderr.startswith("hitl: error:")
    done = hitl("audits", "review", "a1", "--reviewer", "auditor", "--verdict", "approve")
    assert done.returncode == 0 and "audit approve by auditor" in done.stdout
    again = hitl("audits", "review", "a1", "--reviewer", "auditor", "--verdict", "approve")
    assert again.returncode == 2 and "already has a verdict" in again.stderr
