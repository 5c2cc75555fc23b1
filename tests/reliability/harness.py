"""Shared machinery for the fault suite: a worker subprocess, a key-honouring
action target, a TCP fault proxy, plans of decisions and the checks every
fault test ends with.

Everything runs on 127.0.0.1 and is bounded in time: each wait has a deadline,
and every process or server started here is stopped by whoever started it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory

from hitl.client import HitlClient
from hitl.content import content_sha256
from hitl.enums import DecisionStatus, Zone
from hitl.request import DecisionRequest
from hitl.review import ApproveInput, RejectInput
from hitl.state import DecisionState
from hitl.store import AuditRow, DecisionRecord, ExecutionRow, ReviewRow
from tests.factories import make_request
from tests.http_servers import LocalServer, Target
from tests.reviewing import approve, reject
from tests.reviewing import signal as send_signal

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("HITL_FAULT_SEED", "20261121"))

# Summary lines, printed by this package's conftest at the end of the run.
SUMMARIES: list[str] = []


def summary(test: str, **figures: object) -> str:
    """Record and print one quotable line of figures for a fault test."""
    line = f"FAULT {test}: " + " ".join(f"{key}={value}" for key, value in figures.items())
    SUMMARIES.append(line)
    print(line)
    return line


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(predicate: Callable[[], Awaitable[bool]], *, within: float,
                what: str, every: float = 0.1) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {within}s: {what}")
        await asyncio.sleep(every)


# ------------------------------------------------------------------ worker


class WorkerProcess:
    """``python -m worker`` as a real subprocess, configured only through HITL_ env.

    Its JSON log goes to ``log_path``; readiness is the ``worker started`` line.
    """

    def __init__(self, *, address: str, namespace: str, task_queue: str,
                 database_url: str, data_dir: Path, **extra_env: str) -> None:
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith("HITL_")}
        self.env.update({
            "HITL_TEMPORAL_ADDRESS": address, "HITL_NAMESPACE": namespace,
            "HITL_TASK_QUEUE": task_queue, "HITL_DATABASE_URL": database_url,
            "HITL_DATA_DIR": str(data_dir),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")])),
            **extra_env,
        })
        self.log_path = data_dir / f"worker-{task_queue}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self._ready_before = self._started_lines()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    def _started_lines(self) -> int:
        if not self.log_path.exists():
            return 0
        return self.log_path.read_text(errors="replace").count('"msg": "worker started"')

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def wait_ready(self, within: float = 60.0) -> None:
        async def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n"
                                     f"{self.tail()}")
            return self._started_lines() > self._ready_before

        await until(ready, within=within, what="worker subprocess ready", every=0.1)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight tasks are simply abandoned."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.kills += 1

    def stop(self) -> None:
        """SIGTERM (graceful drain), SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_count(self, needle: str) -> int:
        if not self.log_path.exists():
            return 0
        return self.log_path.read_text(errors="replace").count(needle)


# ------------------------------------------------------------------ target


_request = threading.local()


class KeyedTarget(Target):
    """An action target that honours ``Idempotency-Key`` the way a real one must.

    ``counts`` (inherited: requests per key) says what reached the target;
    ``effects`` says what it *did*: the effect runs on the first request with a
    key, and a repeat is answered with the first answer and does nothing. A
    repeat carrying a different body would be a bug in the executor (a key must
    name one action), so it is kept in ``conflicts``.

    The key is read from the request's own headers (a thread-local set by
    :func:`serve_target`), not from ``LocalServer.headers[-1]``, which another
    request's thread may have appended to in between.
    """

    def __init__(self, *, max_delay: float = 0.0, seed: int = SEED) -> None:
        super().__init__()
        self.effects: Counter[str] = Counter()
        self.bodies: dict[str, str] = {}
        self.conflicts: list[str] = []
        self.max_delay = max_delay
        self._random = random.Random(seed)
        self._trap_seconds = 0.0
        self.trapped = threading.Event()
        self.trapped_key: str | None = None

    def arm_trap(self, hold: float) -> None:
        """Hold the next new action for ``hold`` seconds after acting, and set
        ``trapped``: a worker killed now has acted but not written its ledger."""
        with self._lock:
            self.trapped.clear()
            self._trap_seconds = hold

    def __call__(self, body: dict[str, Any]) -> tuple[int, bytes]:
        key = getattr(_request, "headers", {}).get("idempotency-key", "")
        canonical = json.dumps(body, sort_keys=True)
        with self._lock:
            self.counts[key] += 1
            first = key not in self.bodies
            if first:
                self.bodies[key] = canonical
                self.effects[key] += 1  # the effect: performed once per key
            elif self.bodies[key] != canonical:
                self.conflicts.append(key)
            delay = self._random.uniform(0, self.max_delay)
            if first and self._trap_seconds:
                delay, self._trap_seconds, self.trapped_key = self._trap_seconds, 0.0, key
                self.trapped.set()
        if delay:
            time.sleep(delay)  # widens the window between acting and the ledger write
        return self.status, b'{"ok": true}'

    @property
    def absorbed(self) -> int:
        """Repeated requests the key turned into no-ops."""
        return sum(self.counts.values()) - sum(self.effects.values())


@contextmanager
def serve_target(target: KeyedTarget) -> Iterator[LocalServer]:
    server = LocalServer(target)
    base = server.server.RequestHandlerClass

    class Handler(base):  # type: ignore[valid-type, misc]
        def parse_request(self) -> bool:
            ok: bool = super().parse_request()
            _request.headers = {k.lower(): v for k, v in self.headers.items()} if ok else {}
            return ok

    server.server.RequestHandlerClass = Handler
    server.server.socket.listen(256)  # http.server's backlog of 5 refuses bursts
    target.server = server
    with server:
        yield server


# ------------------------------------------------------------- fault proxy


class FaultProxy:
    """A TCP proxy on 127.0.0.1 that can refuse connections for a while.

    It runs its own event loop on a thread, so code that blocks the test's loop
    (a worker's synchronous store setup) cannot stall it. ``refuse()`` closes
    the listening socket (new connections get ECONNREFUSED, as from a stopped
    database) and cuts every live connection; ``allow()`` listens again on the
    same port.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.connections = 0
        self.cut = 0
        self._server: asyncio.Server | None = None
        self._live: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="fault-proxy")
        self._thread.start()

    def _call(self, coro: Awaitable[None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)  # type: ignore[arg-type]

    def allow(self) -> None:
        self._call(self._allow())

    def refuse(self) -> None:
        self._call(self._refuse())

    def close(self) -> None:
        self._call(self._refuse())
        self._call(self._cancel_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _allow(self) -> None:
        assert self._server is None
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port,
                                                  reuse_address=True)

    async def _refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._live):
            writer.transport.abort()
            self.cut += 1
        self._live.clear()

    async def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._live.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()
                self._live.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


# -------------------------------------------------------------------- plans


@dataclass
class Review:
    """One reviewer action to send; ``channel`` is signal, signal twice, or update."""

    verdict: str
    reviewer: str
    request_id: str
    channel: str = "signal"
    # The proposal's digest, known when planned: a review sent while no worker runs
    # cannot ask the decision for it.
    content_sha256: str | None = None

    def payload(self) -> ApproveInput | RejectInput:
        if self.verdict == "approve":
            return ApproveInput(reviewer=self.reviewer, reason="fault suite",
                                request_id=self.request_id,
                                content_sha256=self.content_sha256)
        return RejectInput(reviewer=self.reviewer, reason="fault suite",
                           request_id=self.request_id, content_sha256=self.content_sha256)


@dataclass
class Planned:
    """A decision, the zone it must reach and the reviews it will get."""

    request: DecisionRequest
    kind: str
    zone: Zone
    approve: bool
    reviews: list[Review] = field(default_factory=list)

    @property
    def decision_id(self) -> str:
        return self.request.decision_id

    @property
    def expected_status(self) -> DecisionStatus:
        return DecisionStatus.EXECUTED if self.approve else DecisionStatus.REJECTED

    @property
    def key(self) -> str:
        return f"{self.decision_id}:execute"


KINDS = ("auto", "auto_audit", "queue", "escalate", "four_eyes")


def plan_decision(kind: str, *, approve: bool, target_url: str | None,
                  rng: random.Random, prefix: str = "f") -> Planned:
    """A request of ``kind`` under the built-in policy, with its reviews."""
    decision_id = f"{prefix}-{kind}-{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}"
    url = {"target_url": target_url} if target_url else {}
    if kind == "auto":
        request = make_request(decision_id=decision_id, confidence=0.95, action=url)
        return Planned(request, kind, Zone.AUTO, True)
    if kind == "auto_audit":
        request = make_request(decision_id=decision_id, task_type="content_moderation",
                               outcome="approve", confidence=0.97, output="approve post",
                               action={"type": "approve_post", "params": {"post_id": "p1"},
                                       **url})
        return Planned(request, kind, Zone.AUTO_AUDIT, True)
    if kind == "queue":
        request = make_request(decision_id=decision_id, confidence=0.5,
                               action={"reversible": False, **url})
        planned = Planned(request, kind, Zone.QUEUE, approve)
    elif kind == "escalate":
        request = make_request(decision_id=decision_id, task_type="price_adjustment",
                               confidence=0.5, action={
                                   "type": "adjust_price", "reversible": False,
                                   "params": {"sku": "s1", "new_price": 9.5}, **url})
        planned = Planned(request, kind, Zone.ESCALATE, approve)
    elif kind == "four_eyes":
        request = make_request(decision_id=decision_id, task_type="account_deletion",
                               confidence=0.99, action={
                                   "type": "delete_account", "reversible": False,
                                   "params": {"account_id": "a1"}, **url})
        planned = Planned(request, kind, Zone.ESCALATE, approve)
    else:
        raise ValueError(kind)
    reviewers = rng.sample(["alice", "bob", "carol", "rita"], 2)
    shown = content_sha256(request.output, request.action)
    if approve:
        needed = 2 if kind == "four_eyes" else 1
        planned.reviews = [Review("approve", name, f"{decision_id}-r{i}", content_sha256=shown)
                           for i, name in enumerate(reviewers[:needed])]
    else:
        planned.reviews = [Review("reject", reviewers[0], f"{decision_id}-r0",
                                  content_sha256=shown)]
    return planned


async def send_review(hitl: HitlClient, decision_id: str, review: Review) -> None:
    payload = review.payload()
    if review.channel == "update":
        if review.verdict == "approve":
            assert isinstance(payload, ApproveInput)
            await approve(hitl, decision_id, payload)
        else:
            assert isinstance(payload, RejectInput)
            await reject(hitl, decision_id, payload)
        return
    await send_signal(hitl, decision_id, review.verdict, payload)
    if review.channel == "signal_twice":
        await send_signal(hitl, decision_id, review.verdict, payload)


async def bounded(limit: int, jobs: list[Awaitable[Any]]) -> list[Any]:
    """Await ``jobs`` with at most ``limit`` in flight; exceptions are returned."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Awaitable[Any]) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(one(job) for job in jobs), return_exceptions=True)


# ------------------------------------------------------------------- checks


def wft_failures(history: WorkflowHistory) -> list[str]:
    """Messages of every WorkflowTaskFailed event: there must never be one."""
    return [event.workflow_task_failed_event_attributes.failure.message
            for event in history.events
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]


def activity_retries(history: WorkflowHistory) -> int:
    """Attempts beyond the first, over every activity that started in ``history``."""
    return sum(max(event.activity_task_started_event_attributes.attempt - 1, 0)
               for event in history.events
               if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED)


@dataclass
class Outcome:
    """Figures every fault test reports and asserts on."""

    decisions: int = 0
    executed: int = 0
    duplicates: int = 0
    lost: int = 0
    absorbed: int = 0
    retries: int = 0
    refused: int = 0
    problems: list[str] = field(default_factory=list)


async def pending_failures(client: Client, decision_ids: list[str]) -> list[str]:
    """Last failure messages of the activities these decisions are retrying now."""
    descriptions = await bounded(16, [client.get_workflow_handle(did).describe()
                                      for did in decision_ids])
    return [f"{info.activity_type.name}#{info.attempt}: {info.last_failure.message}"
            for description in descriptions if not isinstance(description, BaseException)
            for info in description.raw_description.pending_activities
            if info.last_failure.message]


async def diagnose(client: Client, plans: list[Planned]) -> str:
    """For a failure message: each decision's reviews and its last history events."""
    lines = []
    for plan in plans:
        handle = client.get_workflow_handle(plan.decision_id)
        try:
            history = await handle.fetch_history()
        except Exception as exc:  # diagnostics only
            lines.append(f"{plan.decision_id}: no history ({exc})")
            continue
        tail = [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_")
                for e in history.events[-6:]]
        lines.append(f"{plan.decision_id}: sent {[r.request_id for r in plan.reviews]}, "
                     f"workflow task failures {wft_failures(history)[:1]}, last events {tail}")
    return "\n".join(lines)


def rows(engine: Engine, model: type[Any]) -> list[Any]:
    with Session(engine) as session:
        return list(session.exec(select(model)).all())


async def verify(client: Client, hitl: HitlClient, plans: list[Planned], target: KeyedTarget,
                 engine: Engine, *, wait_within: float, refusal_ok: str | None = None
                 ) -> Outcome:
    """Wait for every decision and check state, target, ledger and store.

    Nothing lost: each decision reached its expected final status, each
    approved action had its effect, each review sent is recorded once. Nothing
    doubled: no effect twice, no ledger row or review row twice, no effect for
    a rejected decision, no workflow task failure in any history. Every review
    must have been accepted, except refusals whose reason contains
    ``refusal_ok`` (a fault the workflow is meant to fail closed on).
    """
    outcome = Outcome(decisions=len(plans))
    deadline = time.monotonic() + wait_within

    async def final(plan: Planned) -> DecisionState | BaseException:
        try:
            return await hitl.wait(plan.decision_id,
                                   timeout=max(deadline - time.monotonic(), 1.0))
        except (Exception, TimeoutError) as exc:  # reported per decision below
            return exc

    states = await bounded(64, [final(plan) for plan in plans])
    histories = await bounded(32, [client.get_workflow_handle(plan.decision_id).fetch_history()
                                   for plan in plans])
    executions = Counter((row.decision_id, row.phase) for row in rows(engine, ExecutionRow))
    reviews = Counter((row.decision_id, row.request_id) for row in rows(engine, ReviewRow))
    records = {row.decision_id: row.status for row in rows(engine, DecisionRecord)}
    audits = Counter(row.decision_id for row in rows(engine, AuditRow))
    problems = outcome.problems
    for plan, state, history in zip(plans, states, histories, strict=True):
        did = plan.decision_id
        if not isinstance(state, DecisionState):
            problems.append(f"{did}: no final state: {state!r}")
            outcome.lost += 1
            continue
        if isinstance(history, WorkflowHistory):
            for message in wft_failures(history):
                problems.append(f"{did}: workflow task failed: {message}")
            outcome.retries += activity_retries(history)
        if (state.zone, state.status) != (plan.zone, plan.expected_status):
            problems.append(f"{did} ({plan.kind}): {state.zone}/{state.status}, expected "
                            f"{plan.zone}/{plan.expected_status}")
        effects = target.effects.get(plan.key, 0)
        if plan.approve:
            outcome.executed += effects
            if effects == 0:
                outcome.lost += 1
                problems.append(f"{did}: approved but the target never acted")
            if executions[(did, "execute")] != 1:
                problems.append(f"{did}: {executions[(did, 'execute')]} ledger rows")
            if [d.phase.value for d in state.deliveries] != ["execute"]:
                problems.append(f"{did}: deliveries {[d.phase for d in state.deliveries]}")
        elif effects or target.counts.get(plan.key) or executions[(did, "execute")]:
            problems.append(f"{did}: rejected but executed")
            outcome.duplicates += 1
        if effects > 1:
            outcome.duplicates += effects - 1
        sent = {review.request_id for review in plan.reviews}
        seen = [record.request_id for record in state.reviews]
        excused = [r for r in state.reviews if not r.accepted and refusal_ok
                   and refusal_ok in (r.refusal or "")]
        outcome.refused += len(excused)
        if sorted(seen) != sorted(sent) or not all(r.accepted or r in excused
                                                   for r in state.reviews):
            got = [(r.request_id, r.accepted, r.refusal) for r in state.reviews]
            problems.append(f"{did}: reviews in state {got}, sent {sent}")
        for request_id in sent:
            if reviews[(did, request_id)] != 1:
                problems.append(f"{did}: review {request_id} stored "
                                f"{reviews[(did, request_id)]} times")
        if records.get(did) != plan.expected_status.value:
            problems.append(f"{did}: decision record {records.get(did)}")
        if audits[did] != (1 if plan.zone is Zone.AUTO_AUDIT else 0):
            problems.append(f"{did}: {audits[did]} audit rows")
    expected_keys = {plan.key for plan in plans if plan.approve}
    stray = set(target.counts) - expected_keys
    if stray:
        problems.append(f"target saw unexpected keys: {sorted(stray)[:5]}")
    if target.conflicts:
        problems.append(f"same key, different body: {target.conflicts[:5]}")
    outcome.absorbed = target.absorbed
    return outcome
