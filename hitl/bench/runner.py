"""The autonomous and gate phases against a running ``Harness``, as plain JSON data.

hitl, the bare baseline and the floor (``hitl.bench.floor``: hitl's Temporal
steps without hitl's code) run on the same server, at the same concurrency, in
rounds whose order rotates, so drift in the machine's other load lands on all.
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

from temporalio.client import WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from hitl import proofs
from hitl import search_attributes as sa
from hitl.bench.harness import BenchError, Harness
from hitl.bench.load import (
    LoadResult,
    Progress,
    closed_loop,
    latency_summary_ms,
    until,
)
from hitl.bench.scenarios import REVIEWER, auto_request, gate_request
from hitl.client import MEMO_DIGEST
from hitl.content import content_sha256
from hitl.enums import DecisionStatus, Verdict, Zone
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


def _floor_start(h: Harness, workflow_id: str, workflow: str
                 ) -> Awaitable[WorkflowHandle[Any, str]]:
    """Start a floor workflow the way ``HitlClient.submit`` starts a decision: the same
    conflict policies, memo, search attributes and summary, with stand-in values."""
    return h.client.start_workflow(
        workflow, workflow_id, id=workflow_id, task_queue=h.baseline_worker.task_queue,
        result_type=str, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        memo={MEMO_DIGEST: "0" * 64},
        search_attributes=TypedSearchAttributes([
            SearchAttributePair(sa.TASK_TYPE, "ticket_classification"),
            SearchAttributePair(sa.CONFIDENCE, 0.95),
            SearchAttributePair(sa.STATUS, DecisionStatus.SCREENING.value)]),
        static_summary=f"floor · {workflow_id}")


def _floor_run(h: Harness) -> Callable[[str], Awaitable[float]]:
    async def run(workflow_id: str) -> float:
        started = time.perf_counter()
        handle = await _floor_start(h, workflow_id, "FloorWorkflow")
        await handle.result()
        return time.perf_counter() - started
    return run


def _ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(count)]


# ---------------------------------------------------------------------- phases

async def autonomous(h: Harness, config: BenchConfig, tag: str) -> dict[str, Any]:
    """N AUTO decisions submitted and awaited, against the bare and the floor workflows,
    in rounds whose order rotates."""
    systems: dict[str, tuple[Callable[[int, str], list[Any]], Callable[[Any], Awaitable[float]]]]
    systems = {
        "baseline": (lambda n, p: _ids(f"{tag}-{p}b", n), _bare_run(h)),
        "floor": (lambda n, p: _ids(f"{tag}-{p}f", n), _floor_run(h)),
        "hitl": (lambda n, p: [auto_request(f"{tag}-{p}h", i) for i in range(n)],
                 _hitl_decide(h)),
    }
    warm = min(config.warmup, config.decisions)
    for make, op in systems.values():
        await closed_loop(make(warm, "warm"), op, concurrency=config.concurrency)
    # Unloaded: one at a time, so the figure is the path's own latency, not queueing.
    probe = min(config.probe, config.decisions)
    unloaded = {name: await closed_loop(make(probe, "probe"), op, concurrency=1)
                for name, (make, op) in systems.items()}
    tallies = {name: _Tally() for name in systems}
    names = list(systems)
    rounds = max(1, min(config.rounds, config.decisions))
    for r in range(rounds):
        size = config.decisions // rounds + (1 if r < config.decisions % rounds else 0)
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            make, op = systems[name]
            await _measured(h, tallies[name], "hitl" if name == "hitl" else "baseline",
                            partial(closed_loop, make(size, f"r{r}"), op,
                                    concurrency=config.concurrency,
                                    progress=Progress(f"autonomous {name} {r + 1}/{rounds}",
                                                      size, enabled=config.progress)))
    summaries = {name: tally.summary() for name, tally in tallies.items()}
    unloaded_ms = {name: latency_summary_ms(result.latencies)
                   for name, result in unloaded.items()}
    return {
        "decisions": config.decisions, "concurrency": config.concurrency, "rounds": rounds,
        "warmup": warm + probe, **summaries,
        "unloaded": {"decisions": probe, "latency_ms": unloaded_ms,
                     "p50_ratio": _ratio(unloaded_ms["hitl"]["p50"],
                                         unloaded_ms["baseline"]["p50"]),
                     "floor_p50_ratio": _ratio(unloaded_ms["floor"]["p50"],
                                               unloaded_ms["baseline"]["p50"])},
        "ratios": _auto_ratios(summaries["hitl"], summaries["baseline"]),
        # The decomposition: what Temporal charges for hitl's steps, and what hitl adds.
        "floor_ratios": _auto_ratios(summaries["floor"], summaries["baseline"]),
        "hitl_over_floor": _auto_ratios(summaries["hitl"], summaries["floor"]),
    }


def _auto_ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    return {
        "throughput": _ratio(a["throughput_per_second"], b["throughput_per_second"]),
        "p50": _ratio(a["latency_ms"]["p50"], b["latency_ms"]["p50"]),
        "p95": _ratio(a["latency_ms"]["p95"], b["latency_ms"]["p95"]),
        "worker_cpu_per_decision": _ratio(a["worker_cpu_ms_per_decision"],
                                          b["worker_cpu_ms_per_decision"]),
        "server_cpu_per_decision": _ratio(a["server_cpu_ms_per_decision"],
                                          b["server_cpu_ms_per_decision"]),
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


def signed_approval(h: Harness, request: DecisionRequest, *, reason: str,
                    request_id: str) -> ApproveInput:
    """The bench reviewer's approval of ``request``'s proposal, signed with their token."""
    review = ApproveInput(reviewer=REVIEWER, reason=reason, request_id=request_id,
                          content_sha256=content_sha256(request.output, request.action))
    return proofs.sign(review, decision_id=request.decision_id, verdict=Verdict.APPROVE,
                       token=h.reviewer_token)


async def gate(h: Harness, config: BenchConfig, tag: str) -> dict[str, Any]:
    """Approve-signal to executed, for decisions already waiting at the gate."""
    count = config.gate_decisions
    requests = [gate_request(f"{tag}-gate", i) for i in range(count)]
    await submit_all(h, requests, config, "gate: submitting")
    bare_ids, floor_ids = _ids(f"{tag}-bsig", count), _ids(f"{tag}-fsig", count)
    await asyncio.gather(*(h.client.start_workflow(
        "BareSignalWorkflow", i, id=i, task_queue=h.baseline_worker.task_queue)
        for i in bare_ids))
    await asyncio.gather(*(_floor_start(h, i, "FloorSignalWorkflow") for i in floor_ids))
    await until(lambda: counted(h, PENDING_QUERY, count), within=300,
                what=f"{count} decisions pending review")
    await until(lambda: _at_rest(h, [*bare_ids, *floor_ids]), within=300,
                what="bare and floor workflows waiting")

    async def approve(request: DecisionRequest) -> float:
        # Named and signed as a reviewer's client does, before the clock starts: the
        # gate's figure is the workflow's (verification included), not the client's.
        review = signed_approval(h, request, reason="bench",
                                 request_id=f"approve-{request.decision_id}")
        started = time.perf_counter()
        await h.hitl.signal(request.decision_id, "approve", review)
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

    tallies = {"baseline": _Tally(), "floor": _Tally(), "hitl": _Tally()}
    runs: list[tuple[str, Callable[..., Awaitable[LoadResult]]]] = [
        ("baseline", partial(closed_loop, bare_ids, signal_bare)),
        ("floor", partial(closed_loop, floor_ids, signal_bare)),
        ("hitl", partial(closed_loop, requests, approve))]
    for name, load in runs:
        await _measured(h, tallies[name], "hitl" if name == "hitl" else "baseline",
                        partial(load, concurrency=config.gate_concurrency,
                                progress=Progress(f"gate {name}: signal→done", count,
                                                  enabled=config.progress)))
    summaries = {name: tally.summary() for name, tally in tallies.items()}

    def ratios(a: str, b: str) -> dict[str, float | None]:
        return {q: _ratio(summaries[a]["latency_ms"][q], summaries[b]["latency_ms"][q])
                for q in ("p50", "p95")}
    return {
        "decisions": count, "concurrency": config.gate_concurrency, **summaries,
        "ratios": ratios("hitl", "baseline"), "floor_ratios": ratios("floor", "baseline"),
        "hitl_over_floor": ratios("hitl", "floor"),
    }


async def counted(h: Harness, query: str, expected: int) -> bool:
    return await h.count(query) >= expected


def new_tag() -> str:
    return f"b{uuid.uuid4().hex[:6]}"
