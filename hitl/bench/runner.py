"""The autonomous and gate phases against a running ``Harness``, as plain JSON data.

hitl and the baseline run on the same server, at the same concurrency, in
alternating rounds, so drift in the machine's other load lands on both.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from hitl.bench.harness import BenchError, Harness
from hitl.bench.load import (
    LoadResult,
    Progress,
    closed_loop,
    latency_summary_ms,
    until,
)
from hitl.bench.scenarios import REVIEWER, auto_request, gate_request
from hitl.enums import DecisionStatus, Zone
from hitl.request import DecisionRequest
from hitl.review import ApproveInput

PENDING_QUERY = 'ExecutionStatus = "Running" AND HitlStatus = "pending_review"'


@dataclass
class BenchConfig:
    decisions: int = 2000
    concurrency: int = 32
    gate_decisions: int = 200
    gate_concurrency: int = 8
    pending: int = 10_000
    rounds: int = 2
    warmup: int = 50
    probe: int = 50
    queue_samples: int = 20
    hot_seconds: float = 1.0
    progress: bool = True
    phases: set[str] = field(default_factory=lambda: {"hot", "auto", "gate", "pending"})


@dataclass
class _Tally:
    """One system's accumulated load results and CPU seconds, per process."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=lambda: {"worker": 0.0, "server": 0.0,
                                                           "client": 0.0})

    def summary(self) -> dict[str, Any]:
        done = len(self.latencies)
        per = {f"{name}_cpu_ms_per_decision": round(seconds * 1000 / done, 3) if done else None
               for name, seconds in self.cpu.items()}
        return {"completed": done, "errors": len(self.errors), "error_samples": self.errors[:3],
                "wall_seconds": round(self.wall, 3),
                "throughput_per_second": round(done / self.wall, 2) if self.wall else None,
                "latency_ms": latency_summary_ms(self.latencies), **per}


def _client_cpu() -> float:
    times = os.times()
    return times.user + times.system


async def _measured(h: Harness, tally: _Tally, worker: str,
                    run: Callable[[], Awaitable[LoadResult]]) -> None:
    """Run a load and add its results and every process's CPU seconds to ``tally``."""
    proc = h.hitl_worker if worker == "hitl" else h.baseline_worker
    before = (proc.usage(), h.server_usage(), _client_cpu())
    result = await run()
    after = (proc.usage(), h.server_usage(), _client_cpu())
    tally.latencies += result.latencies
    tally.wall += result.wall_seconds
    tally.errors += result.errors
    for name, start, end in (("worker", before[0], after[0]), ("server", before[1], after[1])):
        if start is not None and end is not None:
            tally.cpu[name] += end.cpu_seconds - start.cpu_seconds
    tally.cpu["client"] += after[2] - before[2]


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


# ------------------------------------------------------------------ operations

def _hitl_decide(h: Harness) -> Callable[[DecisionRequest], Awaitable[float]]:
    async def decide(request: DecisionRequest) -> float:
        started = time.perf_counter()
        await h.hitl.submit(request)
        state = await h.hitl.wait(request.decision_id)
        elapsed = time.perf_counter() - started
        if state.status is not DecisionStatus.EXECUTED or state.zone is not Zone.AUTO:
            raise BenchError(f"{request.decision_id}: {state.zone} {state.status.value}")
        return elapsed
    return decide


def _bare_run(h: Harness) -> Callable[[str], Awaitable[float]]:
    async def run(workflow_id: str) -> float:
        started = time.perf_counter()
        handle = await h.client.start_workflow(
            "BareWorkflow", workflow_id, id=workflow_id,
            task_queue=h.baseline_worker.task_queue, result_type=str)
        await handle.result()
        return time.perf_counter() - started
    return run


def _ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(count)]


# ---------------------------------------------------------------------- phases

async def autonomous(h: Harness, config: BenchConfig, tag: str) -> dict[str, Any]:
    """N AUTO decisions submitted and awaited, against the bare workflow, in rounds."""
    decide, bare = _hitl_decide(h), _bare_run(h)
    warm = min(config.warmup, config.decisions)
    await closed_loop([auto_request(f"{tag}-warm", i) for i in range(warm)], decide,
                      concurrency=config.concurrency)
    await closed_loop(_ids(f"{tag}-bwarm", warm), bare, concurrency=config.concurrency)
    # Unloaded: one at a time, so the figure is the path's own latency, not queueing.
    probe = min(config.probe, config.decisions)
    unloaded = {
        "baseline": await closed_loop(_ids(f"{tag}-bprobe", probe), bare, concurrency=1),
        "hitl": await closed_loop([auto_request(f"{tag}-probe", i) for i in range(probe)],
                                  decide, concurrency=1),
    }
    hitl, base = _Tally(), _Tally()
    rounds = max(1, min(config.rounds, config.decisions))
    for r in range(rounds):
        size = config.decisions // rounds + (1 if r < config.decisions % rounds else 0)
        requests = [auto_request(f"{tag}-auto{r}", i) for i in range(size)]
        bare_ids = _ids(f"{tag}-bare{r}", size)
        runs: list[tuple[str, _Tally, Callable[[], Awaitable[LoadResult]]]] = [
            ("baseline", base, partial(
                closed_loop, bare_ids, bare, concurrency=config.concurrency,
                progress=Progress(f"autonomous baseline {r + 1}/{rounds}", size,
                                  enabled=config.progress))),
            ("hitl", hitl, partial(
                closed_loop, requests, decide, concurrency=config.concurrency,
                progress=Progress(f"autonomous hitl {r + 1}/{rounds}", size,
                                  enabled=config.progress))),
        ]
        if r % 2:  # alternate which goes first
            runs.reverse()
        for worker, tally, run in runs:
            await _measured(h, tally, worker, run)
    hitl_summary, base_summary = hitl.summary(), base.summary()
    unloaded_ms = {name: latency_summary_ms(result.latencies)
                   for name, result in unloaded.items()}
    return {
        "decisions": config.decisions, "concurrency": config.concurrency, "rounds": rounds,
        "warmup": warm + probe, "hitl": hitl_summary, "baseline": base_summary,
        "unloaded": {"decisions": probe, "latency_ms": unloaded_ms,
                     "p50_ratio": _ratio(unloaded_ms["hitl"]["p50"],
                                         unloaded_ms["baseline"]["p50"])},
        "ratios": {
            "throughput": _ratio(hitl_summary["throughput_per_second"],
                                 base_summary["throughput_per_second"]),
            "p50": _ratio(hitl_summary["latency_ms"]["p50"], base_summary["latency_ms"]["p50"]),
            "p95": _ratio(hitl_summary["latency_ms"]["p95"], base_summary["latency_ms"]["p95"]),
            "worker_cpu_per_decision": _ratio(hitl_summary["worker_cpu_ms_per_decision"],
                                              base_summary["worker_cpu_ms_per_decision"]),
            "server_cpu_per_decision": _ratio(hitl_summary["server_cpu_ms_per_decision"],
                                              base_summary["server_cpu_ms_per_decision"]),
        },
    }


async def submit_all(h: Harness, requests: Sequence[DecisionRequest], config: BenchConfig,
                      label: str) -> LoadResult:
    async def submit(request: DecisionRequest) -> float:
        started = time.perf_counter()
        await h.hitl.submit(request)
        return time.perf_counter() - started
    result = await closed_loop(requests, submit, concurrency=config.concurrency,
                               progress=Progress(label, len(requests), enabled=config.progress))
    if result.errors:
        raise BenchError(f"{len(result.errors)} submissions failed: {result.errors[0]}")
    return result


async def _at_rest(h: Harness, workflow_ids: Sequence[str]) -> bool:
    """Every workflow has finished its last workflow task and has nothing scheduled."""
    for workflow_id in workflow_ids:
        raw = (await h.client.get_workflow_handle(workflow_id).describe()).raw_description
        if (raw.HasField("pending_workflow_task") or raw.pending_activities
                or raw.workflow_execution_info.history_length < 4):
            return False
    return True


async def gate(h: Harness, config: BenchConfig, tag: str) -> dict[str, Any]:
    """Approve-signal to executed, for decisions already waiting at the gate."""
    count = config.gate_decisions
    requests = [gate_request(f"{tag}-gate", i) for i in range(count)]
    await submit_all(h, requests, config, "gate: submitting")
    bare_ids = _ids(f"{tag}-bsig", count)
    await asyncio.gather(*(h.client.start_workflow(
        "BareSignalWorkflow", i, id=i, task_queue=h.baseline_worker.task_queue)
        for i in bare_ids))
    await until(lambda: counted(h, PENDING_QUERY, count), within=300,
                what=f"{count} decisions pending review")
    await until(lambda: _at_rest(h, bare_ids), within=300, what="bare workflows waiting")

    async def approve(request: DecisionRequest) -> float:
        started = time.perf_counter()
        await h.hitl.signal(request.decision_id, "approve", ApproveInput(
            reviewer=REVIEWER, reason="bench", request_id=f"approve-{request.decision_id}"))
        state = await h.hitl.wait(request.decision_id)
        elapsed = time.perf_counter() - started
        if state.status is not DecisionStatus.EXECUTED:
            raise BenchError(f"{request.decision_id}: {state.status.value} after approval")
        return elapsed

    async def signal_bare(workflow_id: str) -> float:
        started = time.perf_counter()
        handle = h.client.get_workflow_handle(workflow_id, result_type=str)
        await handle.signal("approve", REVIEWER)
        await handle.result()
        return time.perf_counter() - started

    hitl, base = _Tally(), _Tally()
    await _measured(h, base, "baseline", lambda: closed_loop(
        bare_ids, signal_bare, concurrency=config.gate_concurrency,
        progress=Progress("gate baseline: signal→done", count, enabled=config.progress)))
    await _measured(h, hitl, "hitl", lambda: closed_loop(
        requests, approve, concurrency=config.gate_concurrency,
        progress=Progress("gate hitl: approve→executed", count, enabled=config.progress)))
    hitl_summary, base_summary = hitl.summary(), base.summary()
    return {
        "decisions": count, "concurrency": config.gate_concurrency,
        "hitl": hitl_summary, "baseline": base_summary,
        "ratios": {q: _ratio(hitl_summary["latency_ms"][q], base_summary["latency_ms"][q])
                   for q in ("p50", "p95")},
    }


async def counted(h: Harness, query: str, expected: int) -> bool:
    return await h.count(query) >= expected


def new_tag() -> str:
    return f"b{uuid.uuid4().hex[:6]}"
