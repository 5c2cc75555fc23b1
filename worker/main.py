"""The worker: one process hosting DecisionWorkflow and every activity.

Dependencies (engine, one shared httpx client, policy, settings) are built once
here and handed to the activity classes. SIGINT/SIGTERM drain gracefully:
running activities get ``GRACEFUL_SHUTDOWN`` to finish, and anything cut off is
retried by Temporal on the next worker, so a stop never loses a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.worker import (
    PatchActivationInput,
    UnsandboxedWorkflowRunner,
    Worker,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxRestrictions

import workflows as workflows_package
from activities.executor import ExecutorActivities
from activities.judge import JudgeActivities
from activities.recalibration import RecalibrationActivities
from activities.regenerate import RegenerateActivities
from activities.reviewers import ReviewerActivities
from activities.rules import RulesActivities
from activities.store import StoreActivities
from hitl.connection import connect
from hitl.errors import InputError
from hitl.outbound import OutboundPolicy
from hitl.policy import Policy, load_policy
from hitl.policy_versions import PolicySource
from hitl.settings import Settings
from hitl.store import init_store, make_engine
from worker.bytecode import cache_bytecode
from worker.sandbox import DirectLookupSandboxRunner
from workflows import decision as decision_module
from workflows import recalibration as recalibration_module
from workflows.decision import BOUND, FOLDED, FOLDED_BOUND, FOLDED_PATCHES, DecisionWorkflow
from workflows.recalibration import RecalibrationWorkflow

log = logging.getLogger("hitl.worker")
GRACEFUL_SHUTDOWN = timedelta(seconds=15)
ACTIVITY_THREADS = 16

# Project models and pydantic are passed through the sandbox instead of being
# re-imported for every workflow run: same behaviour, far less CPU per decision.
# So is workflows.options, which holds constants only (timeouts, retry policies):
# 0.3 ms less per new decision. The workflow modules themselves are not, so the
# sandbox keeps checking the code that must stay deterministic. Payloads'
# serialization contexts are looked up without entering the sandbox (worker.sandbox).
SANDBOX = DirectLookupSandboxRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "hitl", "pydantic", "pydantic_core", "annotated_types", "typing_extensions",
        "typing_inspection", "workflows.options",
    )
)

# What the sandbox imports afresh for each workflow run: their bytecode is cached at start.
REIMPORTED = (workflows_package, decision_module, recalibration_module)


def workflow_runner(settings: Settings) -> WorkflowRunner:
    """The sandbox by default; none with ``HITL_WORKFLOW_SANDBOX=off``.

    Off trades the run-time check for about a quarter of the worker's CPU per decision
    (docs/BENCHMARKS.md). The workflow code is still held to determinism: the test
    suite and the replay of recorded histories run it in the sandbox.
    """
    return SANDBOX if settings.workflow_sandbox == "strict" else UnsandboxedWorkflowRunner()


# Every ID the workflow code asks for.
PATCH_IDS = frozenset({FOLDED_BOUND, FOLDED, *FOLDED_PATCHES, BOUND})


def patch_activation(settings: Settings) -> Callable[[PatchActivationInput], bool] | None:
    """The SDK's patch-activation callback for ``HITL_INACTIVE_PATCHES``, or None.

    A worker that has never seen a patch replays a history holding its marker as a
    nondeterminism error: its workflow task fails until a newer worker takes it. With
    the new patch left inactive, a rolling upgrade writes only markers every worker
    knows; dropping the setting after the last older worker stops turns it on for the
    decisions that reach it from then on. Replay always follows the history.
    """
    if not settings.inactive_patches:
        return None
    inactive = frozenset(p.strip() for p in settings.inactive_patches.split(",") if p.strip())
    unknown = sorted(inactive - PATCH_IDS)
    if unknown:
        raise InputError(f"HITL_INACTIVE_PATCHES: unknown patch {unknown[0]!r}; the workflow "
                         f"asks for {', '.join(sorted(PATCH_IDS))}", field="inactive_patches")

    def activate(patch: PatchActivationInput) -> bool:
        return patch.patch_id not in inactive
    return activate


def outbound_policy(settings: Settings) -> OutboundPolicy:
    """Where the worker may send (``HITL_OUTBOUND_ALLOW_HOSTS``), built once for every
    activity that calls out. A judge URL the policy refuses is not an error (each
    decision's judge layer fails and the decision goes to a person) but is logged now,
    where the operator looks first."""
    outbound = OutboundPolicy.from_setting(settings.outbound_allow_hosts)
    if settings.judge_url and (refusal := outbound.refusal(settings.judge_url)) is not None:
        log.warning("the judge URL is refused; every judged decision will go to a person",
                    extra={"reason": refusal})
    return outbound


@asynccontextmanager
async def running_worker(
    client: Client, settings: Settings, *, policy: Policy | None = None,
    engine: Engine | None = None, policy_refresh_seconds: float | None = None,
) -> AsyncIterator[Worker]:
    """A started worker for ``settings.task_queue``; stops (gracefully) on exit.

    ``policy`` (else ``settings.policy``, else the built-in) is registered as a
    stored version and applies while no stored version is active; the active
    version is re-read every ``policy_refresh_seconds``.
    """
    policy = policy or load_policy(settings.policy)
    activation = patch_activation(settings)  # a bad value fails before anything starts
    outbound = outbound_policy(settings)
    if settings.workflow_sandbox == "strict":  # unsandboxed, nothing is re-imported
        await asyncio.to_thread(cache_bytecode, REIMPORTED)
    engine = engine or make_engine(settings.resolved_database_url())
    init_store(engine)
    source = PolicySource(engine=engine, fallback=policy,
                          refresh_seconds=policy_refresh_seconds or settings.policy_refresh_seconds)
    await asyncio.to_thread(source.register_fallback)
    if (await asyncio.to_thread(source.refresh)).origin == "store":
        log.warning("a stored policy version is active; the policy file is not applied",
                    extra={"file_policy": policy.full_version,
                           "policy": source.current().policy.full_version})
    async with httpx.AsyncClient(follow_redirects=False) as http, _refreshing(source):
        judge = JudgeActivities(client=http, settings=settings, outbound=outbound)
        rules = RulesActivities(source=source, judge_configured=judge.configured)
        executor = ExecutorActivities(engine=engine, client=http, settings=settings,
                                      outbound=outbound)
        store = StoreActivities(engine=engine)
        reviewers = ReviewerActivities(engine=engine,
                                       require_proofs=settings.verdict_proofs == "required")
        regenerate = RegenerateActivities(client=http, outbound=outbound)
        recalibration = RecalibrationActivities(engine=engine, policy=policy)
        with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as threads:
            worker = Worker(
                client,
                task_queue=settings.task_queue,
                workflows=[DecisionWorkflow, RecalibrationWorkflow],
                activities=[rules.check_rules, judge.judge_decision, executor.execute_action,
                            store.record_review, store.record_audit, store.record_decision,
                            store.update_queue,
                            reviewers.authorize_review, regenerate.regenerate_output,
                            recalibration.propose_policy, recalibration.activate_policy,
                            recalibration.reject_policy],
                activity_executor=threads,
                workflow_runner=workflow_runner(settings),
                graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
                max_cached_workflows=settings.max_cached_workflows,
                patch_activation_callback=activation,
            )
            async with worker:
                log.info("worker started", extra={
                    "task_queue": settings.task_queue, "sandbox": settings.workflow_sandbox,
                    "policy": source.current().policy.full_version,
                    "judge": "configured" if judge.configured else "skipped",
                    "verdict_proofs": settings.verdict_proofs,
                    "outbound_allow_hosts": settings.outbound_allow_hosts or "(any but denied)",
                    "inactive_patches": settings.inactive_patches})
                yield worker


@asynccontextmanager
async def _refreshing(source: PolicySource) -> AsyncIterator[None]:
    """Keep ``source`` refreshed in the background while the worker runs."""
    task = asyncio.create_task(source.run(), name="policy refresh")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or ``stop`` is set)."""
    patch_activation(settings)  # a bad HITL_INACTIVE_PATCHES fails before connecting
    OutboundPolicy.from_setting(settings.outbound_allow_hosts)  # and HITL_OUTBOUND_ALLOW_HOSTS
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = await connect(settings, for_worker=True)
    await ensure_recalibration_schedule(client, settings)
    async with running_worker(client, settings):
        await stop.wait()
        log.info("worker stopping")


async def ensure_recalibration_schedule(client: Client, settings: Settings) -> None:
    """Create the weekly recalibration schedule if it is missing (never changes an
    existing one); a failure is logged, it must not keep the worker from starting."""
    from hitl.schedules import ensure_schedule

    try:
        outcome = await ensure_schedule(client, task_queue=settings.task_queue, update=False)
    except Exception as exc:  # noqa: BLE001 - the worker's decisions matter more
        log.warning("recalibration schedule not ensured", extra={"error": str(exc)[:300]})
        return
    log.info("recalibration schedule", extra={"outcome": outcome})
