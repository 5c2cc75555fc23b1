"""Reject and regenerate, end to end: a real regeneration endpoint on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from hitl.enums import DecisionStatus, ErrorCategory, ExecutionPhase, Zone
from hitl.errors import ReviewRefused
from hitl.limits import MAX_BODY_BYTES, MAX_OUTPUT_BYTES
from hitl.request import DecisionRequest, Regenerate
from hitl.review import ApproveInput, RejectInput
from hitl.store import DecisionRecord, ExecutionRow
from tests.conftest import WorkerFactory
from tests.factories import make_request
from tests.http_servers import LocalServer, Target
from tests.reviewing import approve, reject, signal

pytestmark = pytest.mark.timeout(60)


class Regenerator:
    """A service's regeneration endpoint that honours the Idempotency-Key.

    ``outputs`` are handed out in order, one per new key; a repeated key gets the
    output generated for it before. ``fail_first`` answers 500 after generating,
    as if the response were lost, so the activity retries with the same key.
    """

    def __init__(self, *outputs: tuple[str, float]) -> None:
        self.outputs = list(outputs)
        self.generated: Counter[str] = Counter()
        self.keys: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.fail_first = False
        self.delay = 0.0
        self.mode = "ok"
        self.server: LocalServer | None = None
        self._answers: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> tuple[int, bytes]:
        assert self.server is not None
        key = self.server.current.headers.get("idempotency-key", "")
        if self.delay:
            threading.Event().wait(self.delay)
        with self._lock:
            self.keys.append(key)
            self.bodies.append(body)
            if self.mode == "garbage":
                return 200, b"<html>a new output, honest</html>"
            if self.mode == "oversized":  # a body over the response cap: not even parsed
                return 200, json.dumps({"output": "x" * MAX_BODY_BYTES, "confidence": 0.9}
                                       ).encode()
            if self.mode == "overlong":  # an output over MAX_OUTPUT_BYTES in a small body
                return 200, json.dumps({"output": "\U0001F600" * (MAX_OUTPUT_BYTES // 4 + 1),
                                        "confidence": 0.9}, ensure_ascii=False).encode()
            if self.mode == "400":
                return 400, b'{"error": "unknown decision"}'
            if key not in self._answers:
                self.generated[key] += 1
                output, confidence = self.outputs.pop(0) if len(self.outputs) > 1 else \
                    self.outputs[0]
                self._answers[key] = json.dumps(
                    {"output": output, "confidence": confidence,
                     "candidates": [{"outcome": output, "score": confidence}]}).encode()
                if self.fail_first:
                    return 500, b'{"error": "lost"}'
            return 200, self._answers[key]


def _serve(regenerator: Regenerator) -> LocalServer:
    server = LocalServer(regenerator)
    regenerator.server = server
    return server


def _executions(engine: Engine, decision_id: str) -> list[ExecutionRow]:
    with Session(engine) as session:
        return list(session.exec(select(ExecutionRow).where(
            ExecutionRow.decision_id == decision_id)).all())


async def _waiting(hitl: Any, decision_id: str, attempt: int, within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        state = await hitl.status(decision_id)
        if state.status is DecisionStatus.PENDING_REVIEW and state.attempt == attempt:
            return
        assert asyncio.get_running_loop().time() < deadline, f"not waiting: {state.status}"
        await asyncio.sleep(0.05)


async def _status(hitl: Any, decision_id: str, status: DecisionStatus) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while (await hitl.status(decision_id)).status is not status:
        assert asyncio.get_running_loop().time() < deadline, f"never {status}"
        await asyncio.sleep(0.02)


def _request(url: str, max_attempts: int = 1, **overrides: Any) -> DecisionRequest:
    return make_request(confidence=0.4, regenerate={"url": f"{url}/regenerate",
                                                    "max_attempts": max_attempts}, **overrides)


def test_regenerate_is_validated_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"regenerate\.url"):
        make_request(regenerate={"url": "ftp://example.com/x"})
    with pytest.raises(ValidationError, match=r"regenerate\.max_attempts"):
        make_request(regenerate={"url": "http://127.0.0.1/x", "max_attempts": 4})
    # Requests without the field keep the digest they had before it existed, so a
    # service resubmitting a decision started before the upgrade still attaches.
    plain = make_request()
    before = {k: v for k, v in plain.model_dump(mode="json").items() if k != "regenerate"}
    canonical = json.dumps(before, sort_keys=True, separators=(",", ":"))
    assert plain.payload_sha256() == hashlib.sha256(canonical.encode()).hexdigest()
    with_it = plain.model_copy(update={"regenerate": Regenerate(url="http://127.0.0.1/x")})
    assert with_it.payload_sha256() != plain.payload_sha256()


async def test_rejection_regenerates_and_the_new_output_runs_once(
        hitl_worker: WorkerFactory, sqlite_engine: Engine,
        target_server: tuple[LocalServer, Target]) -> None:
    target_url, target = f"{target_server[0].url}/act", target_server[1]
    regenerator = Regenerator(("technical", 0.95))
    regenerator.delay = 1.0  # long enough to see a review refused mid-regeneration
    with _serve(regenerator) as server:
        async with hitl_worker() as hitl:
            request = _request(server.url, action={"target_url": target_url})
            await hitl.submit(request)
            ack = await reject(hitl, request.decision_id, RejectInput(
                reviewer="bob", reason="it is a technical ticket", correct_answer="technical",
                error_category=ErrorCategory.WRONG_LABEL))
            assert ack.accepted
            await _status(hitl, request.decision_id, DecisionStatus.SCREENING)
            with pytest.raises(ReviewRefused, match="being regenerated"):
                await approve(hitl, request.decision_id, ApproveInput(reviewer="alice"))
            final = await hitl.wait(request.decision_id, timeout=20)
    assert (final.status, final.zone, final.final_output) == (
        DecisionStatus.EXECUTED, Zone.AUTO, "technical")
    assert final.attempt == 1 and final.confidence == 0.95 and final.outcome is None
    assert [(a.number, a.output, a.status, a.zone) for a in final.attempts] == [
        (0, "billing", DecisionStatus.REJECTED, Zone.QUEUE),
        (1, "technical", DecisionStatus.EXECUTED, Zone.AUTO)]
    assert final.attempts[0].verdicts == ["reject by bob: it is a technical ticket"]
    # The update was refused before history: only bob's review is on record.
    assert [(r.reviewer, r.accepted, r.attempt) for r in final.reviews] == [("bob", True, 0)]
    [body] = regenerator.bodies
    assert body == {"decision_id": request.decision_id, "attempt": 1,
                    "task_type": "ticket_classification",
                    "action": request.action.model_dump(mode="json"),
                    "rejected_output": "billing", "confidence": 0.4,
                    "reason": "it is a technical ticket", "error_category": "wrong_label",
                    "correct_answer": "technical"}
    assert regenerator.keys == [f"{request.decision_id}:regen:1"]
    assert target.counts == {f"{request.decision_id}:execute": 1}
    assert [d.phase for d in final.deliveries] == [ExecutionPhase.EXECUTE]
    with Session(sqlite_engine) as session:
        record = session.get(DecisionRecord, request.decision_id)
    assert record is not None and record.status == "executed"
    assert json.loads(record.request_json)["output"] == "technical"


async def test_repeated_rejections_stop_at_max_attempts(hitl_worker: WorkerFactory,
                                                        sqlite_engine: Engine) -> None:
    regenerator = Regenerator(("still billing", 0.5), ("billing again", 0.45))
    with _serve(regenerator) as server:
        async with hitl_worker() as hitl:
            request = _request(server.url, max_attempts=2)
            await hitl.submit(request)
            for attempt in range(3):
                await _waiting(hitl, request.decision_id, attempt)
                await reject(hitl, request.decision_id, RejectInput(
                    reviewer="bob", reason=f"wrong {attempt}", request_id=f"r{attempt}"))
            final = await hitl.wait(request.decision_id, timeout=20)
    assert final.status is DecisionStatus.REJECTED
    assert final.outcome == "rejected after 2 regenerations"
    assert [a.output for a in final.attempts] == ["billing", "still billing", "billing again"]
    assert {a.status for a in final.attempts} == {DecisionStatus.REJECTED}
    assert regenerator.keys == [f"{request.decision_id}:regen:1",
                                f"{request.decision_id}:regen:2"]
    assert [b["reason"] for b in regenerator.bodies] == ["wrong 0", "wrong 1"]
    assert final.deliveries == [] and _executions(sqlite_engine, request.decision_id) == []


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# The outcome is readable by anyone, the URL the submitter's: it names the kind of
# failure, never what the endpoint answered (the worker log has the status and detail).
@pytest.mark.parametrize(("mode", "reason"), [
    ("down", "RuntimeError: regeneration endpoint unavailable"),
    ("garbage", "RegenerateInvalid: regeneration endpoint answered with an invalid result"),
    ("oversized", "RegenerateInvalid: regeneration endpoint answered with an invalid result"),
    ("overlong", "RegenerateInvalid: regeneration endpoint answered with an invalid result"),
    ("400", "RegenerateRejected: regeneration endpoint refused the request"),
])
async def test_a_failed_regeneration_ends_rejected(
        hitl_worker: WorkerFactory, sqlite_engine: Engine, mode: str, reason: str) -> None:
    regenerator = Regenerator(("unused", 0.99))
    regenerator.mode = mode
    with _serve(regenerator) as server:
        url = _closed_port_url() if mode == "down" else server.url
        async with hitl_worker() as hitl:
            request = _request(url)
            await hitl.submit(request)
            await reject(hitl, request.decision_id, RejectInput(reviewer="bob", reason="no"))
            final = await hitl.wait(request.decision_id, timeout=30)
    assert final.status is DecisionStatus.REJECTED
    assert final.outcome == f"rejected: regeneration 1 failed: {reason}"
    assert final.deliveries == [] and _executions(sqlite_engine, request.decision_id) == []
    assert [a.status for a in final.attempts] == [DecisionStatus.REJECTED]
    # Non-retryable failures are not retried; a transport error is, three times.
    assert len(regenerator.keys) == (0 if mode == "down" else 1)


async def test_a_retried_regeneration_generates_once(hitl_worker: WorkerFactory) -> None:
    regenerator = Regenerator(("technical", 0.97))
    regenerator.fail_first = True
    with _serve(regenerator) as server:
        async with hitl_worker() as hitl:
            request = _request(server.url)
            await hitl.submit(request)
            await reject(hitl, request.decision_id, RejectInput(reviewer="bob", reason="no"))
            final = await hitl.wait(request.decision_id, timeout=30)
    key = f"{request.decision_id}:regen:1"
    assert regenerator.keys == [key, key]
    assert regenerator.generated == {key: 1}
    assert (final.status, final.final_output) == (DecisionStatus.EXECUTED, "technical")


async def test_each_attempt_gets_its_own_sla(hitl_worker: WorkerFactory,
                                             skipping_env: WorkflowEnvironment) -> None:
    regenerator = Regenerator(("still unsure", 0.5))
    with _serve(regenerator) as server:
        async with hitl_worker(temporal=skipping_env.client) as hitl:
            request = _request(server.url, action={"reversible": False})
            await hitl.submit(request)
            await skipping_env.sleep(50 * 60)  # most of attempt 0's 1h SLA
            first = await hitl.status(request.decision_id)
            await signal(hitl, request.decision_id, "reject", RejectInput(reviewer="bob"))
            await _waiting(hitl, request.decision_id, 1)
            second = await hitl.status(request.decision_id)
            await skipping_env.sleep(30 * 60)  # past attempt 0's SLA, inside attempt 1's
            assert not (await hitl.status(request.decision_id)).overdue
            await signal(hitl, request.decision_id, "reject", RejectInput(reviewer="bob"))
            final = await hitl.wait(request.decision_id)
    assert first.sla_deadline is not None and second.sla_deadline is not None
    assert second.sla_deadline - first.sla_deadline >= timedelta(minutes=50)
    assert final.status is DecisionStatus.REJECTED
    assert final.outcome == "rejected after 1 regenerations"
