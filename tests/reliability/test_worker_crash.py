"""Worker crashes: SIGKILL the worker subprocess at random moments, restart it,
and every decision still reaches its right end with each action run once.

Hundreds of decisions across every zone are in flight; reviews (signals, some
delivered twice, and updates) are sent while the worker is down and while it
is up; four-eyes decisions get two distinct approvers. The HTTP executor's
target honours the Idempotency-Key: a kill between the target acting and the
ledger write makes Temporal re-POST with the same key, which the target
absorbs. The assertion is the one a key-honouring target gives: one *effect*
per approved action (and none for a rejected one); repeated requests are
counted and reported, not hidden.

``HITL_FAULT_DECISIONS`` (default 500), ``HITL_FAULT_KILLS`` (default 4) and
``HITL_FAULT_SEED`` size and seed the run.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from hitl.client import HitlClient
from hitl.errors import DecisionClosed, DecisionNotFound, ReviewRefused
from hitl.store import init_store, make_engine
from tests.conftest import register_reviewers
from tests.reliability.harness import (
    KINDS,
    SEED,
    KeyedTarget,
    Planned,
    Review,
    WorkerProcess,
    bounded,
    plan_decision,
    send_review,
    serve_target,
    summary,
    until,
    verify,
)

DECISIONS = int(os.environ.get("HITL_FAULT_DECISIONS", "500"))
KILLS = int(os.environ.get("HITL_FAULT_KILLS", "4"))
WEIGHTS = (25, 15, 25, 20, 15)  # auto, auto_audit, queue, escalate, four_eyes

pytestmark = pytest.mark.timeout(420)


async def deliver(hitl: HitlClient, plan: Planned, review: Review, *, within: float,
                  retried: list[int]) -> None:
    """Send one review, retrying transport-level failures with the same request ID.

    An update caught by a kill may fail or time out; resending it with its
    request ID is safe (the workflow answers a known ID with its first answer).
    A refusal or a closed decision is not retried: ``verify`` reports it.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            await asyncio.wait_for(send_review(hitl, plan.decision_id, review), timeout=60)
            return
        except (ReviewRefused, DecisionClosed, DecisionNotFound):
            raise
        except Exception:
            if time.monotonic() > deadline:
                raise
            retried[0] += 1
            await asyncio.sleep(0.5)


async def test_sigkilled_worker_loses_nothing_and_doubles_nothing(client: Client,
                                                                  tmp_path: Path) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    task_queue = f"fault-crash-{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path / 'hitl.db'}"
    engine = make_engine(url)
    init_store(engine)
    register_reviewers(engine)
    target = KeyedTarget(max_delay=0.03, seed=SEED)
    with serve_target(target) as server:
        nonce = uuid.uuid4().hex[:6]
        plans = [plan_decision(rng.choices(KINDS, WEIGHTS)[0], approve=rng.random() < 0.6,
                               target_url=f"{server.url}/act", rng=rng, prefix=f"wc{nonce}")
                 for _ in range(DECISIONS)]
        reviews = [(plan, review) for plan in plans for review in plan.reviews]
        for _, review in reviews:
            roll = rng.random()
            review.channel = ("update" if roll < 0.15 else
                              "signal_twice" if roll < 0.30 else "signal")
        rng.shuffle(reviews)
        phases = 2 * KILLS + 1  # up, down, up, down, ..., up (after the last restart)
        batches = [reviews[i::phases] for i in range(phases)]
        for index in range(1, phases, 2):  # updates need a running worker to answer
            batches[-1] += [r for r in batches[index] if r[1].channel == "update"]
            batches[index] = [r for r in batches[index] if r[1].channel != "update"]

        worker = WorkerProcess(address=client.service_client.config.target_host,
                               namespace=client.namespace, task_queue=task_queue,
                               database_url=url, data_dir=tmp_path)
        hitl = HitlClient(client, task_queue=task_queue)
        retried = [0]
        sending: list[asyncio.Task[list[object]]] = []

        def send(batch: list[tuple[Planned, Review]]) -> asyncio.Task[list[object]]:
            task = asyncio.create_task(bounded(16, [
                deliver(hitl, plan, review, within=180, retried=retried)
                for plan, review in batch]))
            sending.append(task)
            return task

        try:
            worker.start()
            await worker.wait_ready()
            submitted = await bounded(32, [hitl.submit(plan.request) for plan in plans])
            assert not [s for s in submitted if isinstance(s, BaseException)], submitted[:3]
            submit_seconds = time.monotonic() - started
            down_seconds = 0.0
            trapped = 0
            for kill in range(KILLS):
                send(batches[2 * kill])
                if kill == 1:
                    # One kill lands exactly between the target acting and the ledger
                    # write: the retry re-POSTs the same key, which the target absorbs.
                    target.arm_trap(hold=3.0)
                    await until(lambda: _is_set(target), within=30,
                                what="an action in flight at the target")
                    trapped += 1
                else:
                    await asyncio.sleep(rng.uniform(0.5, 4.0))
                worker.kill()
                down = rng.uniform(0.2, 2.0)
                await send(batches[2 * kill + 1])  # signals only: the server takes them
                await asyncio.sleep(down)
                down_seconds += down
                worker.start()
                await worker.wait_ready()
            send(batches[-1])
            chaos_end = time.monotonic()
            sent = await asyncio.wait_for(asyncio.gather(*sending), timeout=240)
            errors = [r for batch in sent for r in batch if isinstance(r, BaseException)]
            assert not errors, f"{len(errors)} reviews not delivered: {errors[:3]}"
            outcome = await verify(client, hitl, plans, target, engine, wait_within=240)
            recovery = time.monotonic() - chaos_end
        finally:
            worker.stop()
            engine.dispose()

    kinds = {kind: sum(p.kind == kind for p in plans) for kind in KINDS}
    summary("worker_crash", decisions=outcome.decisions, kills=worker.kills,
            worker_starts=worker.starts, seed=SEED, mix=kinds,
            reviews=sum(len(p.reviews) for p in plans),
            review_resends=retried[0], executed=outcome.executed,
            duplicates=outcome.duplicates, lost=outcome.lost, kills_mid_action=trapped,
            duplicate_requests_absorbed=outcome.absorbed, activity_retries=outcome.retries,
            down_seconds=f"{down_seconds:.1f}", submit_seconds=f"{submit_seconds:.1f}",
            recovery_seconds=f"{recovery:.1f}", seconds=f"{time.monotonic() - started:.1f}")
    assert not outcome.problems, "\n".join(outcome.problems[:20])
    assert outcome.lost == 0 and outcome.duplicates == 0
    assert outcome.executed == sum(p.approve for p in plans)
    if trapped:  # the kill mid-action was retried with the same key and absorbed
        assert target.trapped_key is not None and target.counts[target.trapped_key] >= 2


async def _is_set(target: KeyedTarget) -> bool:
    return target.trapped.is_set()
