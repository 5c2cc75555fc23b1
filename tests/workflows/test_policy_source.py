"""The policy screening applies, end to end on the dev server: stored versions,
adaptive audit sampling and load shedding, read by a real worker from a real store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import Client

from hitl import policy_versions as pv
from hitl.client import HitlClient
from hitl.enums import DecisionStatus, RiskLevel, Zone
from hitl.review import RejectInput
from hitl.review_queue import ReviewQueueRow
from hitl.settings import Settings
from hitl.store import AuditRow, DecisionRecord
from tests.conftest import WorkerFactory, test_policy
from tests.factories import make_request
from tests.reviewing import reject
from worker.main import running_worker

pytestmark = pytest.mark.timeout(90)

REFRESH = 0.3  # seconds; production default is 10


def _record(engine: Engine, decision_id: str) -> DecisionRecord:
    with Session(engine) as session:
        record = session.get(DecisionRecord, decision_id)
    assert record is not None
    return record


async def test_an_activated_version_applies_to_new_decisions_within_the_refresh(
        client: Client, task_queue: str, sqlite_engine: Engine, tmp_path: Path) -> None:
    version_a = test_policy(thresholds={"task_types": {"ticket_classification": 0.80}})
    version_b = test_policy(thresholds={"task_types": {"ticket_classification": 0.90}})
    settings = Settings(task_queue=task_queue, data_dir=tmp_path)
    async with running_worker(client, settings, policy=version_a, engine=sqlite_engine,
                              policy_refresh_seconds=REFRESH):
        hitl = HitlClient(client, task_queue=task_queue)
        with Session(sqlite_engine) as session:  # the worker registered its file policy
            registered = pv.get(session, version_a.full_version)
            assert registered is not None and registered.source == "file"
        # Irreversible, so a QUEUE decision waits (no respond-now delivery).
        first = await hitl.decide(make_request(confidence=0.85, action={"reversible": False}),
                                  timeout=20)
        assert (first.policy_version, first.zone) == (version_a.full_version, Zone.AUTO)

        with Session(sqlite_engine) as session:
            pv.propose(session, version_b, source="operator")
            pv.activate(session, version_b.full_version, by="alice")
        await asyncio.sleep(REFRESH * 4)

        second = make_request(confidence=0.85, action={"reversible": False})
        await hitl.submit(second)
        state = await hitl.status(second.decision_id)
        for _ in range(100):
            if state.zone is not None:
                break
            await asyncio.sleep(0.05)
            state = await hitl.status(second.decision_id)
        # Same confidence, stricter bar: B routes it to a person.
        assert (state.policy_version, state.zone) == (version_b.full_version, Zone.QUEUE)
        assert state.rules is not None and state.rules.assessment.threshold == 0.90
        await reject(hitl, second.decision_id, RejectInput(reviewer="rita", reason="cleanup"))
        final = await hitl.wait(second.decision_id, timeout=20)
    assert final.status is DecisionStatus.REJECTED
    assert _record(sqlite_engine, first.decision_id).policy_version == version_a.full_version
    assert _record(sqlite_engine, second.decision_id).policy_version == version_b.full_version
    with Session(sqlite_engine) as session:  # every recorded version is a stored version
        assert pv.get(session, version_a.full_version) is not None
        active = pv.active(session)
        assert active is not None and active.version == version_b.full_version


async def test_the_assessment_carries_the_adapted_audit_rate(hitl_worker: WorkerFactory,
                                                             sqlite_engine: Engine) -> None:
    now = datetime.now(UTC)
    with Session(sqlite_engine) as session:  # a clean record: 60 approved audits
        for index in range(60):
            session.add(AuditRow(
                decision_id=f"past-{index}", task_type="content_moderation", risk="high",
                confidence=0.97, sampled=True, sample_rate=0.25, verdict="approve",
                reviewer="alice", created_at=now - timedelta(days=1),
                reviewed_at=now - timedelta(hours=1, minutes=index)))
        session.commit()
    async with hitl_worker() as hitl:
        stable = make_request(task_type="content_moderation", outcome="approve",
                              confidence=0.97, output="approve post",
                              action={"type": "approve_post", "params": {"post_id": "p1"}})
        new = make_request(task_type="price_adjustment", confidence=0.97, output="17.99",
                           action={"type": "adjust_price",
                                   "params": {"sku": "s1", "new_price": 17.99}})
        states = [await hitl.decide(request, timeout=20) for request in (stable, new)]
    assert [s.zone for s in states] == [Zone.AUTO_AUDIT, Zone.AUTO_AUDIT]
    rates = [s.rules.assessment.audit_sample_rate for s in states if s.rules]
    assert rates == [0.075, 0.25]  # stable task type, new task type (built-in figures)
    with Session(sqlite_engine) as session:
        logged = {a.decision_id: a.sample_rate for a in session.exec(
            select(AuditRow).where(AuditRow.decision_id.in_(  # type: ignore[attr-defined]
                [stable.decision_id, new.decision_id]))).all()}
    assert logged == {stable.decision_id: 0.075, new.decision_id: 0.25}


async def test_a_backlog_relaxes_a_low_risk_bar_and_says_why(hitl_worker: WorkerFactory,
                                                            sqlite_engine: Engine) -> None:
    with Session(sqlite_engine) as session:
        for index in range(6):
            session.add(ReviewQueueRow(
                decision_id=f"backlog-{index}", task_type="ticket_classification",
                zone="queue", risk="low", status="pending_review", confidence=0.5, priority=3,
                waiting=True, version=1))
        session.commit()
    policy = test_policy(load_shedding={"queue_depth": 5})
    async with hitl_worker(policy=policy) as hitl:
        low = await hitl.decide(make_request(confidence=0.77), timeout=20)
        medium = make_request(task_type="invoice_matching", confidence=0.84)
        await hitl.submit(medium)
        for _ in range(100):
            held = await hitl.status(medium.decision_id)
            if held.zone is not None:
                break
            await asyncio.sleep(0.05)
        await reject(hitl, medium.decision_id, RejectInput(reviewer="rita", reason="cleanup"))
        await hitl.wait(medium.decision_id, timeout=20)
    # 0.77 is under the task type's 0.80: the backlog let it through at the floor 0.75.
    assert (low.zone, low.status) == (Zone.AUTO, DecisionStatus.EXECUTED)
    assert low.rules is not None and low.rules.assessment.threshold == 0.75
    note = "load shedding: queue 6 > 5, threshold 0.80 -> 0.75"
    assert note in low.rules.assessment.threshold_source
    assert low.routing is not None and note in low.routing.reasons[0]
    # Medium risk is never relaxed, whatever the backlog.
    assert (held.risk, held.zone) == (RiskLevel.MEDIUM, Zone.QUEUE)
    assert held.rules is not None and held.rules.assessment.threshold == 0.85
    assert "load shedding" not in held.rules.assessment.threshold_source
