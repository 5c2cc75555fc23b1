"""The demo stream and its simulated reviewers, on the dev server: after a demo run the
store holds reviews and audit verdicts, so ``hitl metrics`` has figures to show."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hitl.cli_metrics import build_report
from hitl.demo import DEMO_REVIEWERS, demo_requests, review_demo, run_demo
from hitl.enums import DecisionStatus, Zone
from hitl.health_store import load_health_data
from hitl.store import AuditRow, ReviewRow
from tests.conftest import WorkerFactory

WAITING = (DecisionStatus.PENDING_REVIEW, DecisionStatus.PROVISIONAL)


async def test_demo_reviewers_leave_the_last_ones_and_feed_the_metrics(
        hitl_worker: WorkerFactory, sqlite_engine: Engine) -> None:
    prefix, count, leave = f"demo{uuid.uuid4().hex[:6]}", 24, 4
    requests = demo_requests(count, prefix=prefix)
    async with hitl_worker() as hitl:
        assert await run_demo(hitl, count=count, interval=0, prefix=prefix) == count
        for _ in range(200):  # every decision screened: waiting, or already finished
            states = [await hitl.status(r.decision_id) for r in requests]
            if all(s.status is not DecisionStatus.SCREENING for s in states):
                break
            await asyncio.sleep(0.1)
        before = {r.decision_id: s for r, s in zip(requests, states, strict=True)}
        given = await review_demo(hitl, sqlite_engine, requests, leave=leave, pause=0)
        reviewed = [r.decision_id for r in requests[:-leave] if before[r.decision_id].status
                    in WAITING]
        for decision_id in reviewed:  # each reviewed one reaches its end
            await hitl.wait(decision_id, timeout=20)
        after = {r.decision_id: await hitl.status(r.decision_id) for r in requests[-leave:]}

    assert reviewed, "the demo mix always has decisions waiting for a person"
    # The last ones stay for the person trying hitl, as they were.
    assert all(after[i].status is before[i].status for i in after)
    with Session(sqlite_engine) as session:
        rows = session.exec(select(ReviewRow).where(ReviewRow.decision_id.in_(reviewed))).all()
        audits = session.exec(select(AuditRow).where(AuditRow.decision_id.startswith(prefix))
                              ).all()
    assert {r.reviewer for r in rows} <= set(DEMO_REVIEWERS) and rows
    assert {r.decision_id for r in rows} == set(reviewed)
    rejected = [r for r in rows if r.verdict == "reject"]
    assert all(r.error_category not in (None, "other") for r in rejected)
    sampled = [a for a in audits if a.sampled]
    assert all(a.verdict is not None for a in sampled)
    assert given == len(rows) + len(sampled)
    # Four-eyes decisions got both simulated approvers.
    critical = [i for i in reviewed if before[i].approvals_required > 1
                and not any(r.decision_id == i and r.verdict == "reject" for r in rows)]
    for decision_id in critical:
        assert {r.reviewer for r in rows if r.decision_id == decision_id} == set(DEMO_REVIEWERS)

    now = datetime.now(UTC)
    with Session(sqlite_engine) as session:
        data = load_health_data(session=session, since=now - timedelta(hours=1), until=now)
    everything = next(s for s in build_report(data, now=now, window=timedelta(hours=1)).scopes
                      if s.scope == "all")
    assert everything.latency.n == len([r for r in rows if r.accepted]) > 0
    assert everything.escalation.total >= count - leave
    assert any(before[i].zone in (Zone.QUEUE, Zone.ESCALATE) for i in reviewed)
