"""``HITL_WORKFLOW_SANDBOX``: strict by default, ``off`` for a third less worker CPU.

The suite itself always runs strict (the ``hitl_worker`` fixture pins it), so
the sandbox keeps checking the workflow code; these tests show that ``off``
runs the same decisions to the same ends, once each.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from hitl.enums import DecisionStatus, Zone
from hitl.review import ApproveInput
from hitl.settings import Settings
from hitl.store import ExecutionRow
from tests.conftest import WorkerFactory
from tests.factories import make_request
from worker.main import workflow_runner


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
        await hitl.approve(gated.decision_id, ApproveInput(reviewer="rita", request_id="r1"))
        await hitl.approve(gated.decision_id, ApproveInput(reviewer="rita", request_id="r1"))
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
