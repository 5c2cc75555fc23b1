"""``HITL_WORKFLOW_SANDBOX``: strict by default, ``off`` for a quarter less worker CPU.

The suite itself always runs strict (the ``hitl_worker`` fixture pins it), so
the sandbox keeps checking the workflow code; these tests show that ``off``
runs the same decisions to the same ends, once each, and that strict enters the
sandbox only to create a workflow's instance and to run its code.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance

from hitl.enums import DecisionStatus, Zone
from hitl.errors import DecisionClosed
from hitl.review import ApproveInput
from hitl.settings import Settings
from hitl.store import ExecutionRow
from tests.conftest import WorkerFactory
from tests.factories import make_request
from tests.reviewing import approve
from worker.main import workflow_runner
from worker.sandbox import _DirectLookups


def test_strict_is_the_default_and_off_drops_the_sandbox(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HITL_WORKFLOW_SANDBOX", raising=False)
    assert isinstance(workflow_runner(Settings()), SandboxedWorkflowRunner)
    monkeypatch.setenv("HITL_WORKFLOW_SANDBOX", "off")
    assert isinstance(workflow_runner(Settings()), UnsandboxedWorkflowRunner)


@pytest.mark.timeout(60)
async def test_off_runs_the_autonomous_and_gated_paths_once_each(
        hitl_worker: WorkerFactory, sqlite_engine: Engine) -> None:
    async with hitl_worker(workflow_sandbox="off") as hitl:
        auto = await hitl.decide(make_request(confidence=0.95), timeout=20)
        gated = make_request(confidence=0.5)
        await hitl.submit(gated)
        await approve(hitl, gated.decision_id, ApproveInput(reviewer="rita", request_id="r1"))
        try:  # a duplicate: its first answer, or "finished" if the decision already was
            await approve(hitl, gated.decision_id, ApproveInput(reviewer="rita",
                                                                request_id="r1"))
        except DecisionClosed:
            pass
        approved = await hitl.wait(gated.decision_id, timeout=20)
    assert (auto.zone, auto.status) == (Zone.AUTO, DecisionStatus.EXECUTED)
    assert (approved.zone, approved.status) == (Zone.QUEUE, DecisionStatus.EXECUTED)
    with Session(sqlite_engine) as session:
        executed = sorted(row.decision_id for row in session.exec(select(ExecutionRow)))
    assert executed == sorted([auto.decision_id, gated.decision_id])


async def test_a_bad_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("HITL_WORKFLOW_SANDBOX", "maybe")
    with pytest.raises(ValidationError, match="workflow_sandbox"):
        Settings()


@pytest.mark.timeout(60)
async def test_strict_enters_the_sandbox_only_to_create_and_activate(
        hitl_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every payload's serialization context is answered without entering the sandbox,
    and each answer is the one the SDK's own sandboxed path gives. Fails when an SDK
    upgrade moves what worker.sandbox reaches into (its lookups then fall back)."""
    entries: list[str] = []
    lookups: list[tuple[Any, Any]] = []  # (direct answer, the SDK's answer)
    run_code, direct_context = _Instance._run_code, _DirectLookups.get_serialization_context
    direct_store = _DirectLookups.get_external_store_context
    comparing = False

    def counted(self: _Instance, code: str, **extra: Any) -> None:
        if not comparing:
            entries.append(code)
        run_code(self, code, **extra)

    def compared(method: Any, sdk: Any) -> Any:
        def lookup(self: _DirectLookups, command_info: Any) -> Any:
            nonlocal comparing
            answer = method(self, command_info)
            comparing = True
            try:
                lookups.append((answer, sdk(self, command_info)))
            finally:
                comparing = False
            return answer
        return lookup

    monkeypatch.setattr(_Instance, "_run_code", counted)
    monkeypatch.setattr(_DirectLookups, "get_serialization_context",
                        compared(direct_context, _Instance.get_serialization_context))
    monkeypatch.setattr(_DirectLookups, "get_external_store_context",
                        compared(direct_store, _Instance.get_external_store_context))
    async with hitl_worker() as hitl:
        auto = await hitl.decide(make_request(confidence=0.95), timeout=20)
        gated = make_request(confidence=0.5)
        await hitl.submit(gated)
        await approve(hitl, gated.decision_id, ApproveInput(reviewer="rita"))
        approved = await hitl.wait(gated.decision_id, timeout=20)
    assert auto.status is approved.status is DecisionStatus.EXECUTED
    activations = sum("__temporal_in_sandbox.activate(" in code for code in entries)
    inside = [code for code in entries if "_context(" in code]
    assert activations >= 4 and not inside, inside[:1]
    assert len(lookups) > 2 * activations  # several per activation, none inside
    mismatched = [(direct, sdk) for direct, sdk in lookups if direct != sdk]
    assert not mismatched, mismatched[:3]
