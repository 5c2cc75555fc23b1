"""SLA timers on the time-skipping server: provisional delivery, revision, expiry."""

from __future__ import annotations

import pytest
from temporalio.testing import WorkflowEnvironment

from hitl.enums import DecisionStatus, ExecutionPhase, Zone
from hitl.review import ApproveInput, RejectInput
from tests.conftest import WorkerFactory
from tests.factories import make_request
from tests.http_servers import LocalServer, Target
from tests.reviewing import signal

pytestmark = pytest.mark.timeout(90)

HOUR, MINUTE = 3600, 60


def _phases(target: Target, decision_id: str) -> dict[str, int]:
    return {key.removeprefix(f"{decision_id}:"): n for key, n in target.counts.items()}


async def test_reversible_goes_provisional_then_approval_confirms(
        hitl_worker: WorkerFactory, skipping_env: WorkflowEnvironment,
        target_server: tuple[LocalServer, Target]) -> None:
    server, target = target_server
    async with hitl_worker(temporal=skipping_env.client) as hitl:
        request = make_request(confidence=0.5, action={"target_url": f"{server.url}/t"})
        await hitl.submit(request)
        await skipping_env.sleep(HOUR - MINUTE)  # just inside the 1h queue SLA
        assert (await hitl.status(request.decision_id)).status is DecisionStatus.PENDING_REVIEW
        await skipping_env.sleep(2 * MINUTE)
        state = await hitl.status(request.decision_id)
        assert (state.zone, state.status) == (Zone.QUEUE, DecisionStatus.PROVISIONAL)
        assert state.deliveries[0].may_be_revised and state.final_output == "billing"
        assert server.requests[-1]["may_be_revised"] is True
        await signal(hitl, request.decision_id, "approve", ApproveInput(reviewer="alice"))
        final = await hitl.wait(request.decision_id)
    assert final.status is DecisionStatus.EXECUTED
    assert [d.phase for d in final.deliveries] == [ExecutionPhase.PROVISIONAL,
                                                   ExecutionPhase.CONFIRM]
    assert _phases(target, request.decision_id) == {"provisional": 1, "confirm": 1}


async def test_rejection_after_provisional_retracts_it(
        hitl_worker: WorkerFactory, skipping_env: WorkflowEnvironment,
        target_server: tuple[LocalServer, Target]) -> None:
    """A rejection retracts the provisional delivery: a revision with no output. Its
    correct answer is feedback, never delivered (no one approved it); a correction is an
    edit (test_edit_after_provisional_delivers_a_revision)."""
    server, target = target_server
    async with hitl_worker(temporal=skipping_env.client) as hitl:
        request = make_request(confidence=0.5, action={"target_url": f"{server.url}/t"})
        await hitl.submit(request)
        await skipping_env.sleep(HOUR + MINUTE)
        await signal(hitl, request.decision_id, "reject", RejectInput(
            reviewer="bob", reason="wrong label", correct_answer="technical",
            request_id="retract"))
        final = await hitl.wait(request.decision_id)
    assert final.status is DecisionStatus.REVISED and final.final_output is None
    assert [(d.phase, d.output) for d in final.deliveries] == [
        (ExecutionPhase.PROVISIONAL, request.output), (ExecutionPhase.REVISION, None)]
    assert server.requests[-1]["output"] is None
    assert final.reviews[0].correct_answer == "technical"  # kept as feedback
    assert _phases(target, request.decision_id) == {"provisional": 1, "revision": 1}


async def test_edit_after_provisional_delivers_a_revision(
        hitl_worker: WorkerFactory, skipping_env: WorkflowEnvironment) -> None:
    async with hitl_worker(temporal=skipping_env.client) as hitl:
        request = make_request(confidence=0.5)
        await hitl.submit(request)
        await skipping_env.sleep(HOUR + MINUTE)
        await signal(hitl, request.decision_id, "approve",
                          ApproveInput(reviewer="alice", output="account"))
        final = await hitl.wait(request.decision_id)
    assert final.status is DecisionStatus.REVISED and final.final_output == "account"


async def test_irreversible_is_never_executed_by_a_timeout(
        hitl_worker: WorkerFactory, skipping_env: WorkflowEnvironment,
        target_server: tuple[LocalServer, Target]) -> None:
    server, target = target_server
    async with hitl_worker(temporal=skipping_env.client) as hitl:
        request = make_request(task_type="price_adjustment", confidence=0.5, action={
            "type": "adjust_price", "params": {"sku": "s1", "new_price": 3.0},
            "reversible": False, "target_url": f"{server.url}/t"})
        await hitl.submit(request)
        await skipping_env.sleep(6 * MINUTE)  # past the 5m escalate SLA
        state = await hitl.status(request.decision_id)
        assert state.zone is Zone.ESCALATE and state.status is DecisionStatus.PENDING_REVIEW
        assert state.overdue and state.priority == 0 and state.deliveries == []
        await skipping_env.sleep(24 * HOUR)  # past the hard deadline
        final = await hitl.wait(request.decision_id)
    assert final.status is DecisionStatus.EXPIRED and final.deliveries == []
    assert final.finished_at is not None and final.hard_deadline is not None
    assert final.finished_at >= final.hard_deadline
    assert target.counts == {}


async def test_overdue_irreversible_can_still_be_approved(
        hitl_worker: WorkerFactory, skipping_env: WorkflowEnvironment) -> None:
    async with hitl_worker(temporal=skipping_env.client) as hitl:
        request = make_request(task_type="account_deletion", confidence=0.99, action={
            "type": "delete_account", "params": {"account_id": "a1"}, "reversible": False})
        await hitl.submit(request)
        await skipping_env.sleep(2 * HOUR)
        assert (await hitl.status(request.decision_id)).overdue
        await signal(hitl, request.decision_id, "approve", ApproveInput(reviewer="alice"))
        await signal(hitl, request.decision_id, "approve", ApproveInput(reviewer="bob"))
        final = await hitl.wait(request.decision_id)
    assert final.status is DecisionStatus.EXECUTED and final.approved_by == ["alice", "bob"]
    assert [d.phase for d in final.deliveries] == [ExecutionPhase.EXECUTE]


async def test_middle_band_responds_now_and_reviews_after(
        hitl_worker: WorkerFactory, skipping_env: WorkflowEnvironment) -> None:
    async with hitl_worker(temporal=skipping_env.client) as hitl:
        request = make_request(confidence=0.7)  # below 0.80, above the 0.60 floor, low risk
        await hitl.submit(request)
        await skipping_env.sleep(1)
        state = await hitl.status(request.decision_id)
        assert state.status is DecisionStatus.PROVISIONAL and state.routing is not None
        assert state.routing.sla_seconds == 0
        await signal(hitl, request.decision_id, "approve", ApproveInput(reviewer="alice"))
        final = await hitl.wait(request.decision_id)
    assert final.status is DecisionStatus.EXECUTED


async def test_unreviewed_provisional_stands_at_the_hard_deadline(
        hitl_worker: WorkerFactory, skipping_env: WorkflowEnvironment) -> None:
    async with hitl_worker(temporal=skipping_env.client) as hitl:
        request = make_request(confidence=0.5)
        await hitl.submit(request)
        await skipping_env.sleep(25 * HOUR)
        final = await hitl.wait(request.decision_id)
    assert final.status is DecisionStatus.PROVISIONAL
    assert [d.phase for d in final.deliveries] == [ExecutionPhase.PROVISIONAL]
    assert final.reviews == []
