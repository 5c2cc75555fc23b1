"""A blocking ``HitlClient`` for callers without an event loop (a Django view, a script).

A Temporal client belongs to the event loop it connected on, so ``asyncio.run`` per
call would reconnect every time. Instead the wrapper owns one private loop on a
daemon thread for its whole life, connects there once and hands every call to it;
the caller's thread just waits for the answer. Errors from ``HitlClient``
(``DecisionNotFound``, ``ReviewRefused``, ...) reach the caller as they were raised.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from hitl.client import HitlClient, QueueItem, Submission
from hitl.content import Content
from hitl.errors import HitlError
from hitl.request import DecisionRequest
from hitl.review import ApproveInput, RejectInput, ReviewAck
from hitl.settings import Settings
from hitl.state import DecisionState

T = TypeVar("T")


class ClientClosed(HitlError):
    """A ``SyncHitlClient`` was used after ``close()``."""


def _refuse_inside_event_loop() -> None:
    """Blocking a loop's thread on our loop would stall it (or deadlock): refuse early."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError("SyncHitlClient called from inside a running event loop; "
                       "use HitlClient (await its methods) there instead")


class SyncHitlClient:
    """``HitlClient``'s methods, blocking, with the same arguments and results."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread,
                 client: HitlClient) -> None:
        self._loop = loop
        self._thread = thread
        self._lock = threading.Lock()  # a call is never handed to a loop being closed
        self._closed = False
        self._client = client

    @classmethod
    def connect(cls, settings: Settings | None = None) -> SyncHitlClient:
        """Connect once (address, namespace, TLS, API key from ``settings`` or the env)."""
        _refuse_inside_event_loop()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="hitl-sync-client", daemon=True)
        thread.start()
        connecting = HitlClient.connect(settings if settings is not None else Settings())
        try:
            client = asyncio.run_coroutine_threadsafe(connecting, loop).result()
        except BaseException:
            _stop(loop, thread)
            raise
        return cls(loop, thread, client)

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        try:
            _refuse_inside_event_loop()
            with self._lock:
                if self._closed:
                    raise ClientClosed("SyncHitlClient is closed; connect a new one")
                future = asyncio.run_coroutine_threadsafe(call, self._loop)
        except BaseException:
            call.close()  # never scheduled: no "coroutine was never awaited" warning
            raise
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller stops the call on the loop too
            raise

    def submit(self, request: DecisionRequest) -> Submission:
        return self._run(self._client.submit(request))

    def wait(self, decision_id: str, timeout: float | None = None) -> DecisionState:
        return self._run(self._client.wait(decision_id, timeout))

    def decide(self, request: DecisionRequest, timeout: float | None = None) -> DecisionState:
        """Submit and wait for the outcome (the service's blocking call)."""
        return self._run(self._client.decide(request, timeout))

    def status(self, decision_id: str) -> DecisionState:
        return self._run(self._client.status(decision_id))

    def content(self, decision_id: str) -> Content:
        return self._run(self._client.content(decision_id))

    def approve(self, decision_id: str, review: ApproveInput, *,
                token: str | None = None) -> ReviewAck:
        return self._run(self._client.approve(decision_id, review, token=token))

    def reject(self, decision_id: str, review: RejectInput, *,
               token: str | None = None) -> ReviewAck:
        return self._run(self._client.reject(decision_id, review, token=token))

    def pending(self, *, zone: str | None = None, risk: str | None = None,
                task_type: str | None = None, limit: int = 100) -> list[QueueItem]:
        """Decisions waiting for a person, most urgent first (priority, then SLA)."""
        return self._run(self._client.pending(zone=zone, risk=risk, task_type=task_type,
                                             limit=limit))

    def close(self) -> None:
        """Cancel calls still running, stop the loop and join its thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _stop(self._loop, self._thread)

    def __enter__(self) -> SyncHitlClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


async def _wind_down() -> None:
    """What ``asyncio.run`` does on exit: cancel what is left, close generators, executor."""
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    loop = asyncio.get_running_loop()
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    asyncio.run_coroutine_threadsafe(_wind_down(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()
