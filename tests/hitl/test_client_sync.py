"""SyncHitlClient against the real dev server and a real worker.

Every blocking call runs on a plain thread (``asyncio.to_thread``), as a Django view
or a script would make it, so the test's own event loop (which runs the worker)
keeps turning.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.client import Client

from hitl.client_sync import ClientClosed, SyncHitlClient
from hitl.enums import DecisionStatus, Zone
from hitl.errors import DecisionNotFound
from hitl.review import ApproveInput
from hitl.settings import Settings
from hitl.state import DecisionState
from tests.conftest import WorkerFactory
from tests.factories import make_request
from tests.reviewing import token_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings(client: Client, task_queue: str, tmp_path: Path) -> Settings:
    """What a service would set in its environment: the dev server and the worker's queue."""
    return Settings(temporal_address=client.service_client.config.target_host,
                    namespace=client.namespace, task_queue=task_queue, data_dir=tmp_path)


def _until(check: Callable[[], bool], within: float = 15.0) -> None:
    """Poll a blocking ``check()`` (from the calling thread) until it is true."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


async def test_decide_auto_decision_executes(hitl_worker: WorkerFactory,
                                             settings: Settings) -> None:
    request = make_request(confidence=0.95)

    def decide() -> DecisionState:
        with SyncHitlClient.connect(settings) as hitl:
            return hitl.decide(request, timeout=20)

    async with hitl_worker():
        state = await asyncio.to_thread(decide)
    assert state.decision_id == request.decision_id
    assert (state.zone, state.status) == (Zone.AUTO, DecisionStatus.EXECUTED)


async def test_submit_approve_then_wait(hitl_worker: WorkerFactory, settings: Settings) -> None:
    request = make_request(confidence=0.5)

    def review() -> tuple[bool, bool, DecisionState]:
        with SyncHitlClient.connect(settings) as hitl:
            submission = hitl.submit(request)
            again = hitl.submit(request)  # idempotent on the ID, on the same connection
            _until(lambda: hitl.status(request.decision_id).status
                   is DecisionStatus.PENDING_REVIEW)
            _until(lambda: request.decision_id in [
                item.decision_id for item in hitl.pending(task_type=request.task_type,
                                                          zone="queue", limit=500)])
            shown = hitl.content(request.decision_id)
            ack = hitl.approve(request.decision_id, ApproveInput(
                reviewer="alice", reason="looks right", content_sha256=shown.sha256),
                token=token_for("alice"))
            assert not submission.attached and again.attached
            return again.attached, ack.accepted, hitl.wait(request.decision_id, timeout=20)

    async with hitl_worker():
        attached, accepted, final = await asyncio.to_thread(review)
    assert attached and accepted
    assert final.status is DecisionStatus.EXECUTED
    assert final.approved_by == ["alice"]
    assert [d.phase.value for d in final.deliveries] == ["execute"]


async def test_unknown_decision_raises_what_the_async_client_raises(
        hitl_worker: WorkerFactory, settings: Settings) -> None:
    unknown = f"missing-{uuid.uuid4().hex[:12]}"

    def status() -> BaseException:
        with SyncHitlClient.connect(settings) as hitl, pytest.raises(Exception) as caught:
            hitl.status(unknown)
        return caught.value

    async with hitl_worker() as async_hitl:
        with pytest.raises(DecisionNotFound) as expected:
            await async_hitl.status(unknown)
        raised = await asyncio.to_thread(status)
    assert type(raised) is type(expected.value) is DecisionNotFound
    assert unknown in str(raised)


async def test_calls_after_close_raise(settings: Settings) -> None:
    def use_after_close() -> tuple[bool, ClientClosed]:
        hitl = SyncHitlClient.connect(settings)
        hitl.close()
        hitl.close()  # idempotent
        with pytest.raises(ClientClosed, match="closed") as caught:
            hitl.status("any")
        return hitl._thread.is_alive(), caught.value

    alive, error = await asyncio.to_thread(use_after_close)
    assert not alive and isinstance(error, ClientClosed)


async def test_blocking_inside_a_running_loop_is_refused(settings: Settings) -> None:
    with pytest.raises(RuntimeError, match="use HitlClient"):
        SyncHitlClient.connect(settings)
    hitl = await asyncio.to_thread(SyncHitlClient.connect, settings)
    try:
        with pytest.raises(RuntimeError, match="use HitlClient"):
            hitl.status("any")  # on the test's loop thread: would block it
        with pytest.raises(DecisionNotFound):  # still usable from a plain thread
            await asyncio.to_thread(hitl.status, f"missing-{uuid.uuid4().hex[:12]}")
    finally:
        await asyncio.to_thread(hitl.close)
