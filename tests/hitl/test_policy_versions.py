"""Stored policy versions on SQLite and PostgreSQL, the source that caches them, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from hitl import policy_versions as pv
from hitl.errors import InputError, PolicyError
from hitl.policy import Policy, load_policy
from hitl.policy_versions import (
    PolicySource,
    PolicyVersionConflict,
    PolicyVersionNotFound,
    PolicyVersionRow,
    PolicyVersionStatus,
)
from hitl.review_queue import ReviewQueueRow, upsert_entry
from hitl.store import AuditRow, alembic_config, init_store, make_engine
from tests.conftest import BIN, test_policy

A = test_policy(thresholds={"task_types": {"ticket_classification": 0.80}})
B = test_policy(thresholds={"task_types": {"ticket_classification": 0.90}})
C = test_policy(thresholds={"task_types": {"ticket_classification": 0.95}})


def _session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)


def test_propose_stores_the_policy_once_and_reads_it_back(engine: Engine) -> None:
    with _session(engine) as session:
        row = pv.propose(session, A, source="recalibration", proposal={"ece": 0.03})
        again = pv.propose(session, A, source="operator", proposal={"other": True})
        assert (row.version, row.status, row.source) == (A.full_version, "proposed",
                                                         "recalibration")
        assert (again.source, json.loads(again.proposal or "{}")) == ("recalibration",
                                                                      {"ece": 0.03})
        assert pv.get(session, A.full_version) is not None
        assert pv.active(session) is None
        stored = pv.policy_of(row)
        assert len(pv.versions(session)) == 1
    assert stored == A and stored.full_version == A.full_version


def test_activate_retires_the_previous_version_and_is_idempotent(engine: Engine) -> None:
    with _session(engine) as session:
        for policy in (A, B):
            pv.propose(session, policy, source="operator")
        first = pv.activate(session, A.full_version, by="alice", note="initial")
        assert (first.status, first.activated_by, first.note) == ("active", "alice", "initial")
        assert first.activated_at is not None
        again = pv.activate(session, A.full_version, by="bob")
        assert (again.activated_by, again.activated_at) == ("alice", first.activated_at)
        pv.activate(session, B.full_version, by="bob")
        active = pv.active(session)
        assert active is not None and active.version == B.full_version
        assert active.activated_by == "bob"
        retired = pv.get(session, A.full_version)
        assert retired is not None and retired.status == PolicyVersionStatus.RETIRED


def test_rollback_returns_to_the_previous_version_and_back(engine: Engine) -> None:
    with _session(engine) as session:
        with pytest.raises(PolicyVersionNotFound, match="no previously active version"):
            pv.rollback(session, by="alice")
        for policy in (A, B, C):
            pv.propose(session, policy, source="operator")
        pv.activate(session, A.full_version, by="alice")
        pv.activate(session, B.full_version, by="alice")
        pv.activate(session, C.full_version, by="alice")
        back = pv.rollback(session, by="carol")
        assert (back.version, back.status, back.activated_by, back.note) == (
            B.full_version, "active", "carol", "rollback")
        statuses = {row.version: row.status for row in pv.versions(session)}
        assert statuses == {A.full_version: "retired", B.full_version: "active",
                            C.full_version: "retired"}
        assert pv.rollback(session, by="carol").version == C.full_version


def test_reject_is_recorded_and_blocks_activation(engine: Engine) -> None:
    with _session(engine) as session:
        pv.propose(session, A, source="recalibration")
        pv.propose(session, B, source="recalibration")
        rejected = pv.reject(session, A.full_version, by="rita", note="ECE got worse")
        assert (rejected.status, rejected.note) == ("rejected", "rejected by rita: ECE got worse")
        assert pv.reject(session, A.full_version, by="rita").note == rejected.note
        with pytest.raises(PolicyVersionConflict, match="was rejected") as refused:
            pv.activate(session, A.full_version, by="alice")
        assert refused.value.field == "version"
        pv.activate(session, B.full_version, by="alice")
        with pytest.raises(PolicyVersionConflict, match="is active"):
            pv.reject(session, B.full_version, by="rita")
        # Re-proposing a rejected policy does not revive it.
        assert pv.propose(session, A, source="recalibration").status == "rejected"


@pytest.mark.parametrize("call", ["activate", "reject"])
def test_an_unknown_version_is_a_typed_error_naming_the_field(engine: Engine,
                                                               call: str) -> None:
    with _session(engine) as session:
        with pytest.raises(PolicyVersionNotFound, match="unknown policy version 'nope'") as info:
            getattr(pv, call)(session, "nope", by="alice")
        assert info.value.field == "version" and isinstance(info.value, InputError)
        assert pv.get(session, "nope") is None


def test_bad_arguments_name_their_field(engine: Engine) -> None:
    with _session(engine) as session:
        with pytest.raises(InputError) as source:
            pv.propose(session, A, source="somewhere")
        assert source.value.field == "source"
        pv.propose(session, A, source="file")
        with pytest.raises(InputError) as by:
            pv.activate(session, A.full_version, by=" ")
        assert by.value.field == "by"


def test_the_database_holds_at_most_one_active_version(engine: Engine) -> None:
    with _session(engine) as session:
        pv.propose(session, A, source="operator")
        pv.activate(session, A.full_version, by="alice")
        session.add(PolicyVersionRow(version="rogue+00000000", body=B.model_dump_json(),
                                     status="active", source="operator"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_a_tampered_body_is_refused(engine: Engine) -> None:
    with _session(engine) as session:
        row = pv.propose(session, A, source="operator")
        row.body = row.body.replace("0.8", "0.5")
        session.add(row)
        session.commit()
        with pytest.raises(PolicyError, match="hashes to"):
            pv.policy_of(row)
        with pytest.raises(PolicyVersionConflict, match="cannot be applied"):
            pv.activate(session, A.full_version, by="alice")


# ---------------------------------------------------------------- migration

def test_the_migration_applies_on_a_populated_0003_database_and_reverts(
        engine: Engine) -> None:
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0003")
    assert "policy_versions" not in inspect(engine).get_table_names()
    with _session(engine) as session:
        upsert_entry(session=session, entry=_waiting("kept"))
    init_store(engine)
    assert "policy_versions" in inspect(engine).get_table_names()
    with _session(engine) as session:
        assert session.get(ReviewQueueRow, "kept") is not None
        pv.propose(session, A, source="file")
        assert pv.get(session, A.full_version) is not None


def test_the_migration_applies_on_a_0002_sqlite_database(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0002")
    init_store(engine)
    with engine.connect() as connection:
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert revision is not None and revision >= "0004"
    with _session(engine) as session:
        assert pv.propose(session, B, source="file").status == "proposed"


# ------------------------------------------------------------------- source

def _waiting(decision_id: str) -> ReviewQueueRow:
    return ReviewQueueRow(decision_id=decision_id, task_type="ticket_classification",
                          zone="queue", risk="low", status="pending_review", confidence=0.5,
                          priority=3, waiting=True, version=1)


def _audit(session: Session, decision_id: str, *, task_type: str, verdict: str | None,
           at: datetime) -> None:
    session.add(AuditRow(decision_id=decision_id, task_type=task_type, risk="high",
                         confidence=0.97, sampled=verdict is not None, sample_rate=0.25,
                         verdict=verdict, reviewed_at=at if verdict else None))


def test_the_source_applies_the_active_version_and_live_figures(engine: Engine) -> None:
    source = PolicySource(engine=engine, fallback=A, refresh_seconds=0.1)
    assert source.current().policy == A  # before any refresh: the file policy
    assert source.register_fallback().source == "file"
    first = source.refresh()
    assert (first.origin, first.policy.full_version, first.queue_depth) == ("file",
                                                                           A.full_version, 0)
    now = datetime.now(UTC)
    with _session(engine) as session:
        pv.propose(session, B, source="recalibration")
        pv.activate(session, B.full_version, by="alice")
        for index in range(3):
            upsert_entry(session=session, entry=_waiting(f"w{index}"))
        # Oldest first: 25 approvals, then 2 rejections among the latest 20, one unreviewed.
        for index in range(25):
            _audit(session, f"ok{index}", task_type="content_moderation", verdict="approve",
                   at=now - timedelta(hours=2, minutes=index))
        _audit(session, "bad1", task_type="content_moderation", verdict="reject",
               at=now - timedelta(minutes=5))
        _audit(session, "bad2", task_type="content_moderation", verdict="reject",
               at=now - timedelta(minutes=1))
        _audit(session, "open", task_type="content_moderation", verdict=None, at=now)
        _audit(session, "fraud1", task_type="fraud_detection", verdict="approve", at=now)
        session.commit()
    snapshot = source.refresh()
    assert (snapshot.origin, snapshot.policy.full_version, snapshot.queue_depth) == (
        "store", B.full_version, 3)
    moderation = snapshot.audit_stats["content_moderation"]
    assert (moderation.audited, moderation.window, moderation.window_errors,
            moderation.recent, moderation.recent_errors) == (27, 27, 2, 20, 2)
    assert snapshot.audit_stats["fraud_detection"].audited == 1
    assert source.current() is snapshot


def test_a_failed_refresh_keeps_the_last_good_policy(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'hitl.db'}")
    init_store(engine)
    with _session(engine) as session:
        pv.propose(session, B, source="operator")
        pv.activate(session, B.full_version, by="alice")
    source = PolicySource(engine=engine, fallback=A)
    assert source.refresh().policy.full_version == B.full_version
    with engine.begin() as connection:  # the store loses the table: every read fails
        connection.execute(text("DROP TABLE policy_versions"))
    kept = source.refresh()
    assert kept.policy.full_version == B.full_version and kept.origin == "store"


def test_an_unusable_active_version_keeps_the_last_good_policy(engine: Engine) -> None:
    with _session(engine) as session:
        pv.propose(session, B, source="operator")
        pv.activate(session, B.full_version, by="alice")
    source = PolicySource(engine=engine, fallback=A)
    assert source.refresh().policy.full_version == B.full_version
    with engine.begin() as connection:
        connection.execute(text("UPDATE policy_versions SET body = '{\"version\": \"x\"}'"))
    assert source.refresh().policy.full_version == B.full_version


def test_the_source_refuses_a_non_positive_interval(engine: Engine) -> None:
    with pytest.raises(InputError) as info:
        PolicySource(engine=engine, fallback=A, refresh_seconds=0)
    assert info.value.field == "refresh_seconds"


# ---------------------------------------------------------------------- CLI

def _hitl(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "hitl"), "policy", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "HITL_DATABASE_URL": f"sqlite:///{db}",
                                           "HITL_DATA_DIR": str(db.parent)})


def _write(tmp_path: Path, policy: Policy, name: str) -> Path:
    """``policy`` as a TOML file (JSON is TOML-compatible only for flat data, so
    the built-in file with one threshold edited)."""
    text_ = (Path(__file__).parents[2] / "hitl" / "default_policy.toml").read_text()
    threshold = policy.thresholds.task_types["ticket_classification"]
    path = tmp_path / name
    path.write_text(text_.replace("ticket_classification = 0.80",
                                  f"ticket_classification = {threshold:.2f}"))
    return path


def test_the_cli_proposes_activates_shows_and_rolls_back(tmp_path: Path) -> None:
    db = tmp_path / "hitl.db"
    base = load_policy()
    stricter = load_policy(_write(tmp_path, B, "b.toml"))
    assert stricter.full_version != base.full_version
    for policy, name in ((base, "a.toml"), (stricter, "b.toml")):
        done = _hitl("propose", str(_write(tmp_path, policy, name)), "--by", "alice", db=db)
        assert done.returncode == 0, done.stderr
        assert policy.full_version in done.stdout and "proposed" in done.stdout
    assert _hitl("activate", base.full_version, "--by", "alice", db=db).returncode == 0
    done = _hitl("activate", stricter.full_version, "--by", "bob", "--note", "tighter", db=db)
    assert done.returncode == 0 and "active" in done.stdout and "by bob" in done.stdout
    listing = json.loads(_hitl("versions", "--json", db=db).stdout)
    assert {(v["version"], v["status"], v["activated_by"]) for v in listing} == {
        (base.full_version, "retired", "alice"), (stricter.full_version, "active", "bob")}
    shown = json.loads(_hitl("show", stricter.full_version, "--json", db=db).stdout)
    assert shown["policy"]["thresholds"]["task_types"]["ticket_classification"] == 0.9
    assert shown["proposal"]["proposed_by"] == "alice" and shown["note"] == "tighter"
    back = _hitl("rollback", "--by", "carol", "--json", db=db)
    assert back.returncode == 0, back.stderr
    assert (json.loads(back.stdout)["version"], json.loads(back.stdout)["activated_by"]) == (
        base.full_version, "carol")


def test_the_cli_names_bad_input_and_still_validates_files(tmp_path: Path) -> None:
    db = tmp_path / "hitl.db"
    unknown = _hitl("activate", "nope+12345678", "--by", "alice", db=db)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == ("hitl: error: version: unknown policy version "
                                      "'nope+12345678' (see hitl policy versions)")
    assert _hitl("activate", "x", db=db).returncode == 2  # --by is required: explicit
    assert _hitl("rollback", "--by", "alice", db=db).returncode == 2
    validations: list[tuple[str, ...]] = [(), ("check",)]
    for args in validations:
        done = _hitl(*args, db=db)
        assert done.returncode == 0 and done.stdout.startswith("ok\tdefault-1+")
    bad = tmp_path / "bad.toml"
    bad.write_text((Path(__file__).parents[2] / "hitl" / "default_policy.toml").read_text()
                   .replace("stable_rate = 0.075", "stable_rate = 0.3"))
    for args in [(str(bad),), ("check", str(bad))]:
        done = _hitl(*args, db=db)
        assert done.returncode == 2 and "audit.adaptive.stable_rate" in done.stderr
