"""Feedback-store faults: a locked SQLite file, a PostgreSQL that refuses connections.

While the store is unavailable, decisions finish (their executions and decision
records must be written) and reviews arrive (their rows must be written). The
store activities fail or block, Temporal retries them, and afterwards every row
is there exactly once: no review, execution, audit or decision record lost or
duplicated, and no action run twice.

SQLite runs in WAL mode, where a writer holding ``BEGIN EXCLUSIVE`` blocks other
writers but not readers. With the production engine (busy timeout 30 s) a lock
of a few seconds only delays the writes; with a busy timeout shorter than the
lock (what a lock longer than 30 s does in production, without waiting that
long here) the writes fail with ``database is locked`` and are retried.

PostgreSQL is reached through a TCP proxy that refuses connections (and cuts
the live ones) for a few seconds. Reviewer authorization reads the registry,
and fails closed when it cannot: a review that arrives during the outage may
be refused with ``reviewer registry unavailable``; it is recorded as refused
and changes nothing, and the reviewer sends it again.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from temporalio.client import Client, WorkflowExecutionStatus

from hitl.client import HitlClient
from hitl.enums import DecisionStatus, Zone
from hitl.errors import ReviewRefused
from hitl.review import ApproveInput
from hitl.settings import Settings
from hitl.store import init_store, make_engine
from tests.conftest import POSTGRES_URL, postgres_available, register_reviewers
from tests.factories import make_request
from tests.reliability.harness import (
    SEED,
    FaultProxy,
    KeyedTarget,
    Outcome,
    Planned,
    bounded,
    diagnose,
    pending_failures,
    plan_decision,
    send_review,
    serve_target,
    summary,
    until,
    verify,
)
from tests.reviewing import approve, signal
from worker.main import running_worker

pytestmark = pytest.mark.timeout(180)

HOLD = 4.0  # seconds the store stays unavailable
REGISTRY_DOWN = "reviewer registry unavailable"


def short_busy_engine(path: Path, busy_ms: int) -> Engine:
    """``make_engine``'s SQLite setup with a shorter busy timeout."""
    engine = create_engine(f"sqlite:///{path}",
                           connect_args={"check_same_thread": False, "timeout": busy_ms / 1000})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    return engine


@asynccontextmanager
async def sqlite_locked(path: Path) -> AsyncIterator[None]:
    holder = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@asynccontextmanager
async def connections_refused(proxy: FaultProxy) -> AsyncIterator[None]:
    proxy.refuse()
    try:
        yield
    finally:
        proxy.allow()


async def _scenario(client: Client, engine: Engine, tmp_path: Path,
                    fault: AbstractAsyncContextManager[None], *,
                    reviews_during_fault: bool) -> tuple[Outcome, list[str]]:
    """Decisions waiting for review, then the fault. New decisions arrive while
    it holds, and reviews too (``reviews_during_fault``) or just before it, once
    authorized, so their executions and records meet the fault. The target
    holds each action a little, so executions are in flight when it starts.
    Returns the outcome and the activity failures seen during the fault."""
    rng = random.Random(SEED + 2)
    task_queue = f"fault-store-{uuid.uuid4().hex[:8]}"
    target = KeyedTarget(seed=SEED, max_delay=0.0 if reviews_during_fault else 1.0)
    prefix = f"st{uuid.uuid4().hex[:6]}"
    with serve_target(target) as http:
        act = f"{http.url}/act"
        reviewed = [plan_decision(kind, approve=i % 3 != 0, target_url=act, rng=rng,
                                  prefix=prefix)
                    for i, kind in enumerate(["queue", "escalate", "four_eyes"] * 3)]
        autos = [plan_decision(kind, approve=True, target_url=act, rng=rng, prefix=prefix)
                 for kind in ["auto", "auto_audit"] * 3]
        plans: list[Planned] = reviewed + autos
        settings = Settings(task_queue=task_queue, data_dir=tmp_path)
        async with running_worker(client, settings, engine=engine):
            hitl = HitlClient(client, task_queue=task_queue)
            await bounded(16, [hitl.submit(p.request) for p in reviewed])
            await until(_all_pending(hitl, reviewed), within=60, what="decisions pending review")

            async def review() -> None:
                sent = await bounded(16, [send_review(hitl, p.decision_id, r)
                                          for p in reviewed for r in p.reviews])
                assert not [s for s in sent if isinstance(s, BaseException)], sent

            if not reviews_during_fault:
                await review()
                await _until_reviews_seen(hitl, reviewed)
            failures: list[str] = []
            async with fault:
                if reviews_during_fault:
                    await review()
                await bounded(16, [hitl.submit(p.request) for p in autos])
                deadline = time.monotonic() + HOLD
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    failures += await pending_failures(client, [p.decision_id for p in plans])
            outcome = await verify(client, hitl, plans, target, engine, wait_within=90)
    return outcome, sorted(set(failures))


def _reasons(failures: list[str]) -> str:
    """Distinct last-failure messages per activity type, for the summary line."""
    seen = sorted({(f.split("#")[0], f.split(": ", 1)[1][:80]) for f in failures})
    return json.dumps([f"{name}: {message}" for name, message in seen])


def _all_pending(hitl: HitlClient, plans: list[Planned]):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        states = await bounded(16, [hitl.status(p.decision_id) for p in plans])
        return all(getattr(s, "status", None) is DecisionStatus.PENDING_REVIEW for s in states)

    return check


async def _until_reviews_seen(hitl: HitlClient, plans: list[Planned]) -> None:
    """Until the workflow has taken (authorized and noted) every review sent."""

    async def all_seen() -> bool:
        states = await bounded(16, [hitl.status(p.decision_id) for p in plans])
        return all(not isinstance(s, BaseException) and len(s.reviews) >= len(p.reviews)
                   for p, s in zip(plans, states, strict=True))

    try:
        await until(all_seen, within=60, what="reviews reached the workflow")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await diagnose(hitl.temporal, plans)}") from None


@pytest.mark.parametrize("busy_ms", [30_000, 200], ids=["busy-timeout-30s", "busy-timeout-200ms"])
async def test_sqlite_locked(client: Client, tmp_path: Path, busy_ms: int) -> None:
    started = time.monotonic()
    path = tmp_path / "hitl.db"
    engine = make_engine(f"sqlite:///{path}") if busy_ms == 30_000 else short_busy_engine(
        path, busy_ms)
    init_store(engine)
    register_reviewers(engine)
    try:
        outcome, failures = await _scenario(client, engine, tmp_path, sqlite_locked(path),
                                            reviews_during_fault=True)
    finally:
        engine.dispose()
    summary(f"sqlite_locked[{busy_ms}ms busy]", decisions=outcome.decisions,
            faults_injected=1, lock_seconds=HOLD, failed_attempts_seen=len(failures),
            activity_retries=outcome.retries, executed=outcome.executed,
            duplicates=outcome.duplicates, lost=outcome.lost,
            duplicate_requests_absorbed=outcome.absorbed,
            seconds=f"{time.monotonic() - started:.1f}", reasons=_reasons(failures))
    assert not outcome.problems, "\n".join(outcome.problems[:20])
    assert outcome.lost == 0 and outcome.duplicates == 0
    if busy_ms < HOLD * 1000:  # the lock outlasted the busy timeout: writes failed, retried
        assert failures and outcome.retries > 0, failures
    else:  # within the busy timeout: writes wait, nothing fails
        assert not failures, failures


@pytest.fixture
def proxied_postgres() -> Iterator[tuple[FaultProxy, Engine]]:
    """A fresh schema on the machine's PostgreSQL, reached through a FaultProxy;
    reviewers registered. Yields the proxy and an engine that goes through it."""
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    schema = f"fault_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    options = f"{separator}options=-csearch_path%3D{schema}"
    direct = make_engine(f"{POSTGRES_URL}{options}")
    proxy = FaultProxy(("127.0.0.1", 5432))
    proxy.allow()
    host = POSTGRES_URL.split("@", 1)[1].split("/", 1)[0]
    engine = make_engine(POSTGRES_URL.replace(host, f"127.0.0.1:{proxy.port}", 1) + options)
    try:
        init_store(direct)
        register_reviewers(direct)
        yield proxy, engine
    finally:
        engine.dispose()
        proxy.close()
        direct.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


async def test_postgres_connections_refused(client: Client, tmp_path: Path,
                                            proxied_postgres: tuple[FaultProxy, Engine]) -> None:
    started = time.monotonic()
    proxy, engine = proxied_postgres
    outcome, failures = await _scenario(client, engine, tmp_path, connections_refused(proxy),
                                        reviews_during_fault=False)
    summary("postgres_refused", decisions=outcome.decisions, faults_injected=1,
            refused_seconds=HOLD, connections_cut=proxy.cut, proxied_connections=proxy.connections,
            failed_attempts_seen=len(failures), activity_retries=outcome.retries,
            executed=outcome.executed, duplicates=outcome.duplicates, lost=outcome.lost,
            duplicate_requests_absorbed=outcome.absorbed,
            seconds=f"{time.monotonic() - started:.1f}", reasons=_reasons(failures))
    assert not outcome.problems, "\n".join(outcome.problems[:20])
    assert outcome.lost == 0 and outcome.duplicates == 0
    assert failures and outcome.retries > 0, "the outage was not noticed: no activity failed"


# Was a bug: with temporalio 1.35 a local activity that exhausts its retries raises
# ApplicationError, not ActivityError, so the registry lookup's fail-closed path was
# missed: from a signal the whole workflow failed, from an update the raw database
# error escaped and the refusal was never recorded.


@pytest.mark.timeout(90)
@pytest.mark.parametrize("channel", [
    "signal",
    "update",
])
async def test_a_review_during_a_registry_outage_fails_closed(
        client: Client, tmp_path: Path, proxied_postgres: tuple[FaultProxy, Engine],
        channel: str) -> None:
    """The registry (PostgreSQL) is down when a review arrives and stays down past
    the authorization retries: the review is refused and recorded as refused, the
    decision keeps waiting, and a review sent after the outage completes it."""
    proxy, engine = proxied_postgres
    task_queue = f"fault-registry-{uuid.uuid4().hex[:8]}"
    target = KeyedTarget()
    with serve_target(target) as http:
        settings = Settings(task_queue=task_queue, data_dir=tmp_path)
        async with running_worker(client, settings, engine=engine):
            hitl = HitlClient(client, task_queue=task_queue)
            request = make_request(confidence=0.3, action={"reversible": False,
                                                           "target_url": f"{http.url}/act"})
            await hitl.submit(request)
            did = request.decision_id
            handle = client.get_workflow_handle(did)
            plan = Planned(request, "queue", Zone.QUEUE, True)
            await until(_all_pending(hitl, [plan]), within=30, what="decision pending review")
            during = ApproveInput(reviewer="alice", request_id="during-outage")
            refused: BaseException | None = None
            began = time.monotonic()
            proxy.refuse()
            try:
                if channel == "signal":
                    await signal(hitl, did, "approve", during)

                    async def answered() -> bool:
                        description = await handle.describe()
                        if description.status is not WorkflowExecutionStatus.RUNNING:
                            return True
                        return bool((await hitl.status(did)).reviews)

                    await until(answered, within=HOLD + 10, what="the review was answered")
                else:
                    try:
                        await approve(hitl, did, during)
                    except ReviewRefused as exc:
                        refused = exc
                await asyncio.sleep(max(0.0, HOLD - (time.monotonic() - began)))
            finally:
                proxy.allow()
            description = await handle.describe()
            status = description.status.name if description.status else None
            state = await hitl.status(did) if status == "RUNNING" else None
            summary(f"registry_outage[{channel}]", faults_injected=1, workflow_status=status,
                    update_error=json.dumps(str(refused)[:120] if refused else None),
                    recorded=json.dumps([(r.request_id, r.refusal) for r in state.reviews]
                                        if state else None))
            assert status == "RUNNING", f"the decision did not survive: {status}"
            assert state is not None and state.status is DecisionStatus.PENDING_REVIEW
            if channel == "update":
                assert refused is not None and REGISTRY_DOWN in str(refused), refused
            assert [(r.request_id, r.accepted) for r in state.reviews] == [
                ("refused-1:during-outage", False)]
            assert REGISTRY_DOWN in (state.reviews[0].refusal or "")
            ack = await approve(hitl, did, ApproveInput(reviewer="alice", request_id="after"))
            assert ack.accepted
            final = await hitl.wait(did, timeout=30)
    assert final.status is DecisionStatus.EXECUTED
    assert dict(target.effects) == {f"{did}:execute": 1}


@pytest.mark.timeout(60)
# Was a bug (observability): SQLAlchemy errors of ~5 KB exceeded the server's failure
# size limit, so the UI showed "Failure exceeds size limit." instead of the reason.
async def test_a_retrying_store_write_says_why(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "hitl.db"
    engine = short_busy_engine(path, 200)
    init_store(engine)
    task_queue = f"fault-why-{uuid.uuid4().hex[:8]}"
    try:
        async with running_worker(client, Settings(task_queue=task_queue, data_dir=tmp_path),
                                  engine=engine):
            hitl = HitlClient(client, task_queue=task_queue)
            request = make_request(confidence=0.95)
            async with sqlite_locked(path):
                await hitl.submit(request)
                seen: list[str] = []

                async def failing() -> bool:
                    seen[:] = await pending_failures(client, [request.decision_id])
                    return bool(seen)

                await until(failing, within=20, what="a store write failing under the lock")
            await hitl.wait(request.decision_id, timeout=30)
    finally:
        engine.dispose()
    summary("store_failure_reason", faults_injected=1, shown=json.dumps(seen[:2]))
    assert any("locked" in reason for reason in seen), seen
