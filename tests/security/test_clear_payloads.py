"""With encryption on, a payload that arrives in clear is refused, and no decision wedges.

On the real dev server, with a worker and a client built from settings with codec
keys. The attacker is the session's plain client: the same server, no codec, which
is what ``temporal workflow signal`` / ``start`` / ``update`` send. Refusing by
raising in the codec would fail the workflow task forever; the codec hands on a
refusal marker instead, so a clear signal is dropped (the decision goes on and is
decided by a proper encrypted update), a clear update is rejected, and a clear start
fails that start. ``HITL_CODEC_ACCEPT_CLEAR_UNTIL`` in the future accepts them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from hitl import proofs
from hitl.client import HitlClient
from hitl.codec import REFUSAL, generate_key
from hitl.connection import data_converter
from hitl.content import content_sha256
from hitl.enums import DecisionStatus, Verdict
from hitl.errors import PAYLOAD_REFUSED_TYPE, DecisionConflict
from hitl.request import DecisionRequest
from hitl.review import ApproveInput
from hitl.settings import Settings
from tests.conftest import WorkerFactory
from tests.factories import make_request
from tests.reviewing import approve, token_for

pytestmark = pytest.mark.timeout(90)


def _codec_client(client: Client, task_queue: str, tmp_path: Path,
                  accept_clear_until: datetime | None = None) -> Client:
    """The session's connection with an encrypting converter (what worker and API use)."""
    settings = Settings(task_queue=task_queue, data_dir=tmp_path,
                        codec_keys=SecretStr(f"k1={generate_key()}"),
                        codec_accept_clear_until=accept_clear_until)
    config = client.config()
    config["data_converter"] = data_converter(settings)
    return Client(**config)


def _escalated() -> DecisionRequest:
    """High risk and not confident: it waits for a person."""
    return make_request(decision_id=f"clear-{uuid.uuid4().hex[:10]}",
                        task_type="content_moderation", outcome="remove", confidence=0.5,
                        action={"type": "remove_post", "params": {"post_id": "p-1"}},
                        context={"requested_by": "alice"})


async def _until(predicate: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def _event_types(client: Client, decision_id: str) -> list[EventType.ValueType]:
    history = await client.get_workflow_handle(decision_id).fetch_history()
    return [event.event_type for event in history.events]


async def _signal_handled(client: Client, decision_id: str) -> bool:
    """A workflow task completed after the last signal arrived: the worker has seen it."""
    types = await _event_types(client, decision_id)
    signaled = [i for i, kind in enumerate(types)
                if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    return bool(signaled) and EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in types[
        signaled[-1]:]


async def _waiting(hitl: HitlClient, decision_id: str) -> None:
    async def pending() -> bool:
        return (await hitl.status(decision_id)).status is DecisionStatus.PENDING_REVIEW
    await _until(pending)


async def test_a_clear_signal_is_dropped_and_the_decision_still_completes(
        hitl_worker: WorkerFactory, client: Client, task_queue: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    codec_client = _codec_client(client, task_queue, tmp_path)
    request = _escalated()
    async with hitl_worker(temporal=codec_client) as hitl:
        await hitl.submit(request)
        await _waiting(hitl, request.decision_id)
        plain = client.get_workflow_handle(request.decision_id)
        with caplog.at_level(logging.WARNING, logger="hitl.codec"):
            await plain.signal("approve", {"reviewer": "bob", "reason": "forged in clear",
                                           "request_id": "clear-1"})
            await _until(lambda: _signal_handled(client, request.decision_id))
        assert "refused a payload that arrived unencrypted" in caplog.text
        state = await hitl.status(request.decision_id)
        assert state.status is DecisionStatus.PENDING_REVIEW and state.reviews == []

        # A clear update is rejected before it reaches history, with the refusal.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await plain.execute_update("approve", {"reviewer": "bob", "reason": "in clear"})
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == PAYLOAD_REFUSED_TYPE

        # The decision is still alive: a proper (encrypted) approval decides it.
        ack = await approve(hitl, request.decision_id, ApproveInput(reviewer="bob", reason="ok"))
        assert ack.accepted
        state = await hitl.wait(request.decision_id, timeout=30)
    assert state.status is DecisionStatus.EXECUTED
    assert [(r.reviewer, r.reason, r.verdict) for r in state.reviews] == [
        ("bob", "ok", Verdict.APPROVE)]
    types = await _event_types(client, request.decision_id)
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED in types
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in types
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED in types  # bob's, only


async def test_a_clear_start_fails_that_start_and_nothing_else(
        hitl_worker: WorkerFactory, client: Client, task_queue: str, tmp_path: Path) -> None:
    codec_client = _codec_client(client, task_queue, tmp_path)
    request = make_request(decision_id=f"clear-{uuid.uuid4().hex[:10]}")  # would run AUTO
    async with hitl_worker(temporal=codec_client) as hitl:
        handle = await client.start_workflow(
            "DecisionWorkflow", request.model_dump(mode="json"), id=request.decision_id,
            task_queue=task_queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await codec_client.get_workflow_handle(request.decision_id).result()
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == PAYLOAD_REFUSED_TYPE
        assert cause.message == REFUSAL
        types = await _event_types(client, handle.id)
        assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in types
        assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in types
        assert EventType.EVENT_TYPE_MARKER_RECORDED not in types  # not even the rules ran
        # The service submitting that ID is told it conflicts, not handed a 500.
        with pytest.raises(DecisionConflict):
            await hitl.submit(request)


async def test_within_the_migration_window_a_clear_signal_is_accepted(
        hitl_worker: WorkerFactory, client: Client, task_queue: str, tmp_path: Path) -> None:
    codec_client = _codec_client(client, task_queue, tmp_path,
                                 accept_clear_until=datetime.now(UTC) + timedelta(hours=1))
    request = _escalated()
    async with hitl_worker(temporal=codec_client) as hitl:
        await hitl.submit(request)
        await _waiting(hitl, request.decision_id)
        signed = proofs.sign(ApproveInput(
            reviewer="bob", reason="sent in clear", request_id="clear-2",
            content_sha256=content_sha256(request.output, request.action)),
            decision_id=request.decision_id, verdict=Verdict.APPROVE, token=token_for("bob"))
        await client.get_workflow_handle(request.decision_id).signal(
            "approve", signed.model_dump(mode="json", exclude_none=True))
        state = await hitl.wait(request.decision_id, timeout=30)
    assert state.status is DecisionStatus.EXECUTED
    assert [(r.reviewer, r.reason) for r in state.reviews] == [("bob", "sent in clear")]
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in await _event_types(
        client, request.decision_id)


async def test_past_the_window_a_clear_signal_is_refused(
        hitl_worker: WorkerFactory, client: Client, task_queue: str, tmp_path: Path) -> None:
    codec_client = _codec_client(client, task_queue, tmp_path,
                                 accept_clear_until=datetime.now(UTC) - timedelta(seconds=1))
    request = _escalated()
    async with hitl_worker(temporal=codec_client) as hitl:
        await hitl.submit(request)
        await _waiting(hitl, request.decision_id)
        await client.get_workflow_handle(request.decision_id).signal(
            "approve", {"reviewer": "bob", "reason": "too late", "request_id": "clear-3"})
        await _until(lambda: _signal_handled(client, request.decision_id))
        state = await hitl.status(request.decision_id)
    assert state.status is DecisionStatus.PENDING_REVIEW and state.reviews == []
