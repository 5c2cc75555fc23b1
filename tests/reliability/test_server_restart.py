"""Temporal server restarts: decisions waiting for review and actions in flight
survive the dev server being stopped and started again on its SQLite database.

The server here is hitl's own embedded dev server (``hitl.devserver.DevServer``,
what ``hitl up`` runs), with a persistent database in the test's directory and
ports of its own; the worker is a real subprocess. Nothing may be lost (every
decision ends as planned, every approved action has its effect) and nothing
doubled (one effect per key, one ledger row, one review row per request ID).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from pathlib import Path

import pytest

from hitl.client import HitlClient
from hitl.connection import connect
from hitl.devserver import DevServer
from hitl.enums import DecisionStatus
from hitl.settings import Settings
from hitl.store import init_store, make_engine
from tests.conftest import register_reviewers
from tests.reliability.harness import (
    KINDS,
    SEED,
    KeyedTarget,
    Planned,
    WorkerProcess,
    bounded,
    free_port,
    plan_decision,
    send_review,
    serve_target,
    summary,
    until,
    verify,
)

DECISIONS = int(os.environ.get("HITL_FAULT_RESTART_DECISIONS", "40"))

pytestmark = pytest.mark.timeout(300)


async def _restart(server: DevServer, down: float) -> float:
    """Terminate the server, keep it down for ``down`` seconds, start it again."""
    began = time.monotonic()
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(down)
    await asyncio.to_thread(server.start, 90.0)
    return time.monotonic() - began


async def test_dev_server_restarts_lose_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    rng = random.Random(SEED + 1)
    server = DevServer(data_dir=tmp_path / "temporal", port=free_port(), ui_port=free_port())
    url = f"sqlite:///{tmp_path / 'hitl.db'}"
    engine = make_engine(url)
    init_store(engine)
    register_reviewers(engine)
    task_queue = f"fault-restart-{uuid.uuid4().hex[:8]}"
    target = KeyedTarget(seed=SEED)
    worker = WorkerProcess(address=server.address, namespace=server.namespace,
                           task_queue=task_queue, database_url=url, data_dir=tmp_path)
    restarts, worker_restarts, outage = 0, 0, 0.0
    await asyncio.to_thread(server.start, 90.0)
    try:
        with serve_target(target) as http:
            client = await connect(Settings(temporal_address=server.address,
                                            namespace=server.namespace))
            hitl = HitlClient(client, task_queue=task_queue)
            act = f"{http.url}/act"
            reviewed = [plan_decision(KINDS[2 + i % 3], approve=rng.random() < 0.6,
                                      target_url=act, rng=rng, prefix="sr")
                        for i in range(DECISIONS * 3 // 4)]
            autos = [plan_decision(KINDS[i % 2], approve=True, target_url=act, rng=rng,
                                   prefix="sr") for i in range(DECISIONS - len(reviewed))]
            plans: list[Planned] = reviewed + autos
            worker.start()
            await worker.wait_ready()
            early, late = autos[: len(autos) // 2], autos[len(autos) // 2:]
            assert not [r for r in await bounded(16, [hitl.submit(p.request)
                                                      for p in reviewed + early])
                        if isinstance(r, BaseException)]

            async def waiting() -> bool:
                states = await bounded(16, [hitl.status(p.decision_id) for p in reviewed])
                return all(getattr(s, "status", None) is DecisionStatus.PENDING_REVIEW
                           for s in states)

            await until(waiting, within=60, what="reviewed decisions pending review")

            # Restart 1: approvals just sent and new decisions just submitted, so
            # actions are in flight (the target holds one) when the server stops.
            first = reviewed[: len(reviewed) // 2]
            target.arm_trap(hold=2.0)
            await bounded(16, [send_review(hitl, p.decision_id, r)
                               for p in first for r in p.reviews])
            await bounded(16, [hitl.submit(p.request) for p in late])
            await until(_trapped(target), within=30, what="an action in flight")
            outage += await _restart(server, down=rng.uniform(1.0, 3.0))
            restarts += 1
            if not worker.alive:
                worker.start()
                worker_restarts += 1

            # Restart 2: the rest still waiting for review across the restart.
            outage += await _restart(server, down=rng.uniform(1.0, 3.0))
            restarts += 1
            if not worker.alive:
                worker.start()
                worker_restarts += 1
            rest = reviewed[len(reviewed) // 2:]
            sent = await bounded(16, [_send_when_up(hitl, p, within=60) for p in rest])
            assert not [s for s in sent if isinstance(s, BaseException)], sent
            outcome = await verify(client, hitl, plans, target, engine, wait_within=150)
    finally:
        worker.stop()
        await asyncio.to_thread(server.stop)
        engine.dispose()

    summary("server_restart", decisions=outcome.decisions, restarts=restarts,
            outage_seconds=f"{outage:.1f}", worker_restarts=worker_restarts,
            pending_across_restart=len(rest), executed=outcome.executed,
            duplicates=outcome.duplicates, lost=outcome.lost,
            duplicate_requests_absorbed=outcome.absorbed, activity_retries=outcome.retries,
            seconds=f"{time.monotonic() - started:.1f}")
    assert not outcome.problems, "\n".join(outcome.problems[:20])
    assert outcome.lost == 0 and outcome.duplicates == 0
    assert outcome.executed == sum(p.approve for p in plans)


def _trapped(target: KeyedTarget):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return target.trapped.is_set()

    return check


async def _send_when_up(hitl: HitlClient, plan: Planned, *, within: float) -> None:
    """Reviews sent right after a restart: retried while the frontend warms up."""
    deadline = time.monotonic() + within
    for review in plan.reviews:
        while True:
            try:
                await send_review(hitl, plan.decision_id, review)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
