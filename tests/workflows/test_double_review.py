"""Blind double review: two independent verdicts, hidden from each other until both are in."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.testing import WorkflowEnvironment

from hitl.api import create_app
from hitl.content import content_sha256
from hitl.enums import DecisionStatus, Verdict
from hitl.errors import ReviewRefused
from hitl.health import reviewer_agreement
from hitl.health_store import load_health_data
from hitl.policy import parse_policy
from hitl.request import DecisionRequest
from hitl.review import ApproveInput, RejectInput
from hitl.review_queue import ReviewQueueRow
from hitl.store import ExecutionRow, ReviewRow
from tests.conftest import WorkerFactory, register_reviewers, test_policy
from tests.factories import make_request
from tests.http_servers import LocalServer, Target
from tests.reviewing import approve, reject, signal

pytestmark = pytest.mark.timeout(60)
BLIND = test_policy(review={"double_blind_rate": 1.0})


def _rows(engine: Engine, model: type, decision_id: str) -> list[Any]:
    with Session(engine) as session:
        return list(session.exec(select(model).where(model.decision_id == decision_id)).all())


async def _pending(hitl: Any, decision_id: str) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    while (await hitl.status(decision_id)).status is not DecisionStatus.PENDING_REVIEW:
        assert asyncio.get_running_loop().time() < deadline, "never reached the gate"
        await asyncio.sleep(0.05)


def _queued(**overrides: Any) -> DecisionRequest:
    return make_request(confidence=0.4, **overrides)


def test_the_rate_is_a_probability_per_task_type() -> None:
    policy = test_policy(review={"double_blind_rate": 0.25,
                                 "double_blind_by_task_type": {"medical_triage": 1.0}})
    assert policy.review.blind_rate("medical_triage") == 1.0
    assert policy.review.blind_rate("ticket_classification") == 0.25
    assert load_default_rate() == 0.0
    data = BLIND.model_dump(mode="json")
    data["review"]["double_blind_rate"] = 1.5
    with pytest.raises(Exception, match=r"review\.double_blind_rate"):
        parse_policy(data)


def load_default_rate() -> float:
    from hitl.policy import load_policy

    return load_policy().review.blind_rate("ticket_classification")


async def test_rate_zero_keeps_single_review(hitl_worker: WorkerFactory) -> None:
    async with hitl_worker(policy=test_policy(review={"double_blind_rate": 0.0})) as hitl:
        request = _queued()
        await hitl.submit(request)
        await reject(hitl, request.decision_id, RejectInput(reviewer="bob", reason="no"))
        final = await hitl.wait(request.decision_id, timeout=20)
    assert final.status is DecisionStatus.REJECTED and not final.blind_review
    assert final.approvals_required == 1 and not final.reviews[0].blind


async def test_two_blind_approvals_execute_once_and_stay_hidden_until_then(
        hitl_worker: WorkerFactory, sqlite_engine: Engine,
        target_server: tuple[LocalServer, Target]) -> None:
    server, target = target_server
    tokens = register_reviewers(sqlite_engine, ("ann", "ben"))
    async with hitl_worker(policy=BLIND) as hitl:
        app = create_app(hitl=hitl, engine=sqlite_engine)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://hitl.test") as http:
            request = _queued(action={"target_url": f"{server.url}/act"})
            named = {"content_sha256": content_sha256(request.output, request.action)}
            await hitl.submit(request)
            await _pending(hitl, request.decision_id)
            first = await http.post(
                f"/api/decisions/{request.decision_id}/approve",
                json={"reason": "fine", **named},
                headers={"Authorization": f"Bearer {tokens['ann']}"})
            assert first.status_code == 200 and "blind verdict 1 of 2" in first.json()["message"]
            # The second reviewer sees that a verdict is in, never which one.
            view = await http.get(f"/api/decisions/{request.decision_id}/review",
                                  headers={"Authorization": f"Bearer {tokens['ben']}"})
            state = view.json()["state"]
            assert view.status_code == 200 and state["blind_review"] is True
            assert (state["reviews"], state["approved_by"], state["hidden_reviews"]) == (
                [], [], 1)
            assert '"reason":"fine"' not in view.text and '"ann"' not in view.text
            status = await http.get(f"/api/decisions/{request.decision_id}")
            assert status.json()["reviews"] == [] and status.json()["hidden_reviews"] == 1
            queried = await hitl.status(request.decision_id)
            assert queried.reviews == [] and queried.approved_by == []
            with Session(sqlite_engine) as session:
                row = session.get(ReviewQueueRow, request.decision_id)
            assert row is not None and row.summary.startswith("blind double review")
            # The Temporal UI's current details withhold the verdict too.
            metadata = await hitl.temporal.get_workflow_handle(request.decision_id).query(
                "__temporal_workflow_metadata", result_type=WorkflowMetadata)
            assert "blind double review: 1 verdict(s) in" in metadata.current_details
            assert "ann" not in metadata.current_details
            assert target.counts == {}
            second = await http.post(
                f"/api/decisions/{request.decision_id}/approve",
                json={"reason": "ok", **named},
                headers={"Authorization": f"Bearer {tokens['ben']}"})
            assert second.status_code == 200 and second.json()["message"] == "approve accepted"
            final = await hitl.wait(request.decision_id, timeout=20)
    assert final.status is DecisionStatus.EXECUTED and final.approved_by == ["ann", "ben"]
    assert [(r.reviewer, r.blind) for r in final.reviews] == [("ann", True), ("ben", True)]
    assert target.counts == {f"{request.decision_id}:execute": 1}


async def test_a_blind_rejection_waits_for_the_second_verdict(
        hitl_worker: WorkerFactory, sqlite_engine: Engine) -> None:
    async with hitl_worker(policy=BLIND) as hitl:
        request = _queued()
        await hitl.submit(request)
        ack = await reject(hitl, request.decision_id, RejectInput(reviewer="bob", reason="no"))
        assert ack.accepted and ack.status is DecisionStatus.PENDING_REVIEW
        state = await hitl.status(request.decision_id)
        assert state.status is DecisionStatus.PENDING_REVIEW and state.hidden_reviews == 1
        await approve(hitl, request.decision_id, ApproveInput(reviewer="alice", reason="ok"))
        final = await hitl.wait(request.decision_id, timeout=20)
    assert final.status is DecisionStatus.REJECTED and final.deliveries == []
    rows = _rows(sqlite_engine, ReviewRow, request.decision_id)
    assert sorted((r.reviewer, r.verdict, r.accepted) for r in rows) == [
        ("alice", "approve", True), ("bob", "reject", True)]
    assert _rows(sqlite_engine, ExecutionRow, request.decision_id) == []


async def test_different_approved_outputs_fail_closed(hitl_worker: WorkerFactory) -> None:
    async with hitl_worker(policy=BLIND) as hitl:
        request = _queued()
        await hitl.submit(request)
        await approve(hitl, request.decision_id, ApproveInput(reviewer="alice",
                                                             output="technical"))
        await approve(hitl, request.decision_id, ApproveInput(reviewer="bob"))
        final = await hitl.wait(request.decision_id, timeout=20)
    assert final.status is DecisionStatus.REJECTED and final.deliveries == []
    # An edit in a blind review is one no other reviewer saw: never executed, kept as
    # the correct answer.
    assert "a blind reviewer edited" in final.attempts[0].verdicts[-1]


async def test_one_reviewer_cannot_give_both_verdicts(hitl_worker: WorkerFactory) -> None:
    async with hitl_worker(policy=BLIND) as hitl:
        request = _queued(context={"requested_by": "carol"})
        await hitl.submit(request)
        await approve(hitl, request.decision_id, ApproveInput(reviewer="alice"))
        with pytest.raises(ReviewRefused, match="already gave a verdict"):
            await reject(hitl, request.decision_id, RejectInput(reviewer="alice", reason="x"))
        with pytest.raises(ReviewRefused, match="requested this decision"):
            await approve(hitl, request.decision_id, ApproveInput(reviewer="carol"))
        await approve(hitl, request.decision_id, ApproveInput(reviewer="bob"))
        final = await hitl.wait(request.decision_id, timeout=20)
    assert final.status is DecisionStatus.EXECUTED
    assert [(r.reviewer, r.accepted) for r in final.reviews] == [
        ("alice", True), ("alice", False), ("carol", False), ("bob", True)]


# Ten decisions (kappa and alpha need ten pairs): 6 both approve, 2 both reject, 2 split.
PAIRS = [(Verdict.APPROVE, Verdict.APPROVE)] * 6 + [(Verdict.REJECT, Verdict.REJECT)] * 2 + [
    (Verdict.APPROVE, Verdict.REJECT), (Verdict.REJECT, Verdict.APPROVE)]


async def test_kappa_and_alpha_come_from_the_blind_pairs(hitl_worker: WorkerFactory,
                                                         sqlite_engine: Engine) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    async with hitl_worker(policy=BLIND) as hitl:

        async def review(pair: tuple[Verdict, Verdict]) -> None:
            request = _queued()
            await hitl.submit(request)
            for reviewer, verdict in zip(("alice", "bob"), pair, strict=True):
                if verdict is Verdict.APPROVE:
                    await approve(hitl, request.decision_id, ApproveInput(reviewer=reviewer))
                else:
                    await reject(hitl, request.decision_id, RejectInput(reviewer=reviewer))
            await hitl.wait(request.decision_id, timeout=30)

        await asyncio.gather(*(review(pair) for pair in PAIRS))
    with Session(sqlite_engine) as session:
        data = load_health_data(session=session, since=since,
                                until=datetime.now(UTC) + timedelta(minutes=1))
    agreement = reviewer_agreement(data.reviews)
    # By hand: p_o = 8/10, p_e = (7*7 + 3*3)/100 = 0.58, kappa = 0.22/0.42.
    assert agreement.kappa.n == 10 and agreement.kappa.value == pytest.approx(0.22 / 0.42)
    # Nominal alpha: 20 ratings (14 approve, 6 reject), D_e = 2*14*6, D_o = 2*2.
    assert agreement.alpha.n == 10
    assert agreement.alpha.value == pytest.approx(1 - 19 * 4 / 168)
    assert agreement.pair_agreement.value == pytest.approx(0.8)


async def test_a_lone_blind_rejection_blocks_provisional_and_rejects_at_the_deadline(
        hitl_worker: WorkerFactory, skipping_env: WorkflowEnvironment,
        target_server: tuple[LocalServer, Target]) -> None:
    server, target = target_server
    async with hitl_worker(policy=BLIND, temporal=skipping_env.client) as hitl:
        request = _queued(action={"target_url": f"{server.url}/t"})
        await hitl.submit(request)
        await signal(hitl, request.decision_id, "reject", RejectInput(reviewer="bob",
                                                                     reason="wrong"))
        await skipping_env.sleep(2 * 3600)  # past the 1h SLA: a reversible output would go out
        state = await hitl.status(request.decision_id)
        assert state.status is DecisionStatus.PENDING_REVIEW and state.deliveries == []
        await skipping_env.sleep(23 * 3600)  # past the 24h hard deadline
        final = await hitl.wait(request.decision_id)
    assert final.status is DecisionStatus.REJECTED and target.counts == {}
