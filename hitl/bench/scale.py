"""Pending scale: worker memory and review-queue latency with P decisions waiting at
once, then the drain rate of approving them all.

The queue is read three ways at each level: through the review API over HTTP
(``GET /api/queue``, what a reviewer's page waits for, and what the target is
about), from the ``review_queue`` table the API reads, and from Temporal
visibility (``HitlClient.pending``, for services).

Memory is read at half and at all of P: with P above the worker's workflow
cache (``max_cached_workflows``, 1,000 by default) the two figures should
match, because the cache, not the number pending, bounds what stays resident.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sized
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.service import RPCError

from hitl.bench.harness import BenchError, Harness
from hitl.bench.load import Progress, closed_loop, latency_summary_ms, until
from hitl.bench.machine import ProcUsage
from hitl.bench.runner import PENDING_QUERY, BenchConfig, counted, signed_approval, submit_all
from hitl.bench.scenarios import gate_request
from hitl.request import DecisionRequest

QUEUE_PAGE = 50
QUEUE_BUDGET = 20.0  # seconds of queue sampling per pending level, at most
STALL_SECONDS = 120.0  # a drain that finishes nothing for this long has stalled


async def pending(h: Harness, config: BenchConfig, tag: str) -> dict[str, Any]:
    """Worker memory and queue latency with P decisions waiting, then a bulk approval."""
    total = config.pending
    levels = sorted({max(1, total // 2), total})
    requests = [gate_request(f"{tag}-pend", i) for i in range(total)]
    idle = h.hitl_worker.usage()
    samples: list[dict[str, Any]] = []
    submitted = 0
    async with _api_queue(h) as api:
        for level in levels:
            submit = await submit_all(h, requests[submitted:level], config,
                                       f"pending: submitting to {level}")
            submitted = level
            await until(partial(counted, h, PENDING_QUERY, level), within=600,
                        what=f"{level} decisions pending review")
            await asyncio.sleep(1.0)
            usage = h.hitl_worker.usage()
            visibility = await _sample(lambda: h.hitl.pending(limit=QUEUE_PAGE),
                                       config.queue_samples)
            sample: dict[str, Any] = {
                "pending": level, "worker_rss_mb": _rss(usage),
                "submit_per_second": round(submit.throughput, 1),
                "queue_first_page_ms": latency_summary_ms(visibility.latencies),
                "queue_page_size": visibility.size,
                "queue_samples": len(visibility.latencies),
            }
            store = _store_queue(h)
            if store is not None:
                table = await _sample(store, config.queue_samples)
                sample |= {"store_queue_first_page_ms": latency_summary_ms(table.latencies),
                           "store_queue_page_size": table.size}
            if api is not None:
                served = await _sample(api, config.queue_samples)
                if served.size != min(QUEUE_PAGE, level):
                    raise BenchError(f"GET /api/queue returned {served.size} items with "
                                     f"{level} pending; expected {min(QUEUE_PAGE, level)}")
                sample |= {"api_queue_first_page_ms": latency_summary_ms(served.latencies),
                           "api_queue_page_size": served.size}
            samples.append(sample)

    progress = Progress(f"pending: approving {total}", total, enabled=config.progress)
    started = time.perf_counter()

    async def approve(request: DecisionRequest) -> float:
        review = signed_approval(h, request, reason="bench bulk",
                                 request_id=f"bulk-{request.decision_id}")
        began = time.perf_counter()
        await h.hitl.signal(request.decision_id, "approve", review)
        return time.perf_counter() - began

    signals = await closed_loop(requests, approve, concurrency=config.concurrency,
                                progress=progress)
    signalled = time.perf_counter() - started
    running = 'ExecutionStatus = "Running" AND HitlTaskType = "price_adjustment"'
    executing = Progress(f"pending: executing {total}", total, enabled=config.progress)

    progress_at, last_left = time.perf_counter(), total

    async def drained_all() -> bool:
        nonlocal progress_at, last_left
        left = await h.count(running)
        executing.set(total - left)
        if left < last_left:
            progress_at, last_left = time.perf_counter(), left
        elif time.perf_counter() - progress_at > STALL_SECONDS:
            raise BenchError(
                f"bulk approval stalled: {left} of {total} approved decisions still running, "
                f"none finished in {STALL_SECONDS:.0f}s (see docs/BENCHMARKS.md, worker stall)")
        return left == 0

    stalled: str | None = None
    try:
        await until(drained_all, within=3600, interval=0.5, what="every approval executed")
    except BenchError as exc:
        # Keep what was measured (memory and queue at each level) and say what the
        # stalled worker looked like, instead of losing the phase.
        stalled = f"{exc}; {await _pollers(h)}"
    executing.close()
    drained = time.perf_counter() - started
    after = h.hitl_worker.usage()
    executed = await h.count(f'HitlStatus = "executed" AND WorkflowId STARTS_WITH "{tag}-pend"')
    return {
        "pending": total, "levels": samples,
        "idle_worker_rss_mb": _rss(idle),
        "peak_worker_rss_mb": round(after.peak_rss_mb, 1) if after else None,
        "baseline_worker_rss_mb": _rss(h.baseline_worker.usage()),
        "drain": {"approvals": total, "signal_errors": len(signals.errors),
                  "signals_seconds": round(signalled, 2), "seconds": round(drained, 2),
                  "per_second": round(executed / drained, 1) if drained else None,
                  "signal_latency_ms": latency_summary_ms(signals.latencies),
                  "stalled": stalled},
        "executed": executed,
    }


async def _pollers(h: Harness) -> str:
    """Who polls the hitl task queue now, by task type. Kept for any future stall:
    the ones seen before came from the harness's unread stdout pipe blocking the SDK
    core (docs/BENCHMARKS.md), and showed pollers that had stopped polling."""
    found = []
    for kind, name in ((TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, "workflow"),
                       (TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY, "activity")):
        try:
            response = await h.client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=h.client.namespace, task_queue_type=kind,
                    task_queue=TaskQueue(name=h.hitl_worker.task_queue)))
            found.append(f"{name} pollers {len(response.pollers)}")
        except RPCError as exc:
            found.append(f"{name} pollers unknown ({exc.message})")
    return ", ".join(found)


@dataclass(frozen=True)
class _Samples:
    latencies: list[float]
    size: int


async def _sample(page: Callable[[], Awaitable[Sized]], samples: int) -> _Samples:
    """Time ``page`` up to ``samples`` times, stopping early after ``QUEUE_BUDGET``
    seconds (a page read from visibility takes seconds at 10,000 pending)."""
    latencies, size, began = [], 0, time.perf_counter()
    for _ in range(samples):
        started = time.perf_counter()
        size = len(await page())
        latencies.append(time.perf_counter() - started)
        if len(latencies) >= 3 and time.perf_counter() - began > QUEUE_BUDGET:
            break
    return _Samples(latencies, size)


def _store_queue(h: Harness) -> Callable[[], Awaitable[Sized]] | None:
    """The review API's default source, the ``review_queue`` table, when this tree has it."""
    try:
        from hitl.api.queue import QueueQuery, StoreQueue
    except ImportError:
        return None
    source, query = StoreQueue(h.engine), QueueQuery(limit=QUEUE_PAGE)

    async def page() -> Sized:
        return (await source.page(query)).items
    return page


@contextlib.asynccontextmanager
async def _api_queue(h: Harness) -> AsyncIterator[Callable[[], Awaitable[Sized]] | None]:
    """The review API, served by uvicorn on 127.0.0.1 in this process, read as the
    benchmark's reviewer with its bearer token over one kept-alive connection, as a
    reviewer's page reads it (opened by an untimed first request); None when this
    tree has no API."""
    try:
        from hitl.api.app import create_app
        from hitl.api.server import serving
    except ImportError:
        yield None
        return
    app = create_app(hitl=h.hitl, engine=h.engine)
    headers = {"Authorization": f"Bearer {h.reviewer_token}"}
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=headers) as http:
        async def page() -> Sized:
            response = await http.get("/api/queue", params={"limit": QUEUE_PAGE})
            response.raise_for_status()
            items: list[Any] = response.json()["items"]
            return items
        await page()
        yield page


def _rss(usage: ProcUsage | None) -> float | None:
    return round(usage.rss_mb, 1) if usage is not None else None
