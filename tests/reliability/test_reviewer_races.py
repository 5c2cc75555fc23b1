"""Reviewers racing each other: concurrent updates and signals on one decision.

Exactly one verdict wins; every loser gets a clear error (``ReviewRefused``, or
``DecisionClosed`` if the decision finished first) and changes nothing; the
action runs at most once. Each race runs on several decisions at once, so
that both orders (and the same workflow task) occur.

Sequential versions (self-approval, unknown reviewer, four-eyes with one
reviewer twice, a signal before any worker ran, a duplicate signal) are in
tests/workflows/test_decision.py; these are the concurrent ones.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable
from typing import Any

import pytest

from hitl.client import HitlClient
from hitl.enums import DecisionStatus
from hitl.errors import DecisionClosed, ReviewRefused
from hitl.request import DecisionRequest
from hitl.review import ApproveInput, RejectInput, ReviewAck
from tests.conftest import WorkerFactory
from tests.factories import make_request
from tests.http_servers import Judge, LocalServer
from tests.reliability.harness import KeyedTarget, serve_target, summary, until
from tests.reviewing import approve, reject, signal

pytestmark = pytest.mark.timeout(90)

COPIES = 6  # decisions per race


def _queued(target_url: str, **overrides: Any) -> DecisionRequest:
    return make_request(confidence=0.3, action={"reversible": False, "target_url": target_url},
                        **overrides)


def _four_eyes(target_url: str) -> DecisionRequest:
    return make_request(task_type="account_deletion", confidence=0.99, action={
        "type": "delete_account", "params": {"account_id": "a"}, "reversible": False,
        "target_url": target_url})


async def _pending(hitl: HitlClient, requests: list[DecisionRequest]) -> None:
    await asyncio.gather(*(hitl.submit(r) for r in requests))

    async def waiting() -> bool:
        states = await asyncio.gather(*(hitl.status(r.decision_id) for r in requests))
        return all(s.status is DecisionStatus.PENDING_REVIEW for s in states)

    await until(waiting, within=30, what="decisions pending review")


async def _race(*calls: Awaitable[ReviewAck]) -> list[ReviewAck | BaseException]:
    return list(await asyncio.gather(*calls, return_exceptions=True))


def _kind(result: ReviewAck | BaseException) -> str:
    if isinstance(result, ReviewAck):
        return "accepted" if result.accepted else "unaccepted-ack"
    if isinstance(result, ReviewRefused | DecisionClosed):
        return "refused"
    return f"unexpected {type(result).__name__}: {result}"


async def test_approve_and_reject_at_the_same_instant(hitl_worker: WorkerFactory) -> None:
    target = KeyedTarget()
    with serve_target(target) as http:
        async with hitl_worker() as hitl:
            requests = [_queued(f"{http.url}/act") for _ in range(COPIES)]
            await _pending(hitl, requests)
            results = await asyncio.gather(*(_race(
                approve(hitl, r.decision_id, ApproveInput(reviewer="alice")),
                reject(hitl, r.decision_id, RejectInput(reviewer="bob", reason="no")),
            ) for r in requests))
            finals = await asyncio.gather(*(hitl.wait(r.decision_id, timeout=30)
                                            for r in requests))
    winners: Counter[str] = Counter()
    for request, (approval, rejection), final in zip(requests, results, finals, strict=True):
        kinds = sorted([_kind(approval), _kind(rejection)])
        assert kinds == ["accepted", "refused"], (approval, rejection)
        won = "approve" if _kind(approval) == "accepted" else "reject"
        winners[won] += 1
        loser = rejection if won == "approve" else approval
        assert "already decided" in str(loser) or isinstance(loser, DecisionClosed), loser
        key = f"{request.decision_id}:execute"
        if won == "approve":
            assert final.status is DecisionStatus.EXECUTED and target.effects[key] == 1
        else:
            assert final.status is DecisionStatus.REJECTED and key not in target.counts
        assert sum(r.accepted for r in final.reviews) == 1
    summary("race_approve_vs_reject", decisions=COPIES, races=COPIES,
            approve_won=winners["approve"], reject_won=winners["reject"],
            executed=sum(target.effects.values()), duplicates=0,
            duplicate_requests_absorbed=target.absorbed)
    assert all(n <= 1 for n in target.effects.values())


async def test_two_approvers_race_on_a_one_approver_decision(hitl_worker: WorkerFactory
                                                             ) -> None:
    target = KeyedTarget()
    with serve_target(target) as http:
        async with hitl_worker() as hitl:
            requests = [_queued(f"{http.url}/act") for _ in range(COPIES)]
            await _pending(hitl, requests)
            results = await asyncio.gather(*(_race(
                approve(hitl, r.decision_id, ApproveInput(reviewer="alice")),
                approve(hitl, r.decision_id, ApproveInput(reviewer="bob")),
            ) for r in requests))
            finals = await asyncio.gather(*(hitl.wait(r.decision_id, timeout=30)
                                            for r in requests))
    for request, pair, final in zip(requests, results, finals, strict=True):
        assert sorted(map(_kind, pair)) == ["accepted", "refused"], pair
        assert final.status is DecisionStatus.EXECUTED
        assert target.effects[f"{request.decision_id}:execute"] == 1
        assert len(final.approved_by) == 1
    summary("race_two_approvers", decisions=COPIES, races=COPIES,
            executed=sum(target.effects.values()), duplicates=0)


async def test_the_same_update_twice_concurrently_is_one_review(hitl_worker: WorkerFactory
                                                                ) -> None:
    target = KeyedTarget()
    with serve_target(target) as http:
        async with hitl_worker() as hitl:
            requests = [_queued(f"{http.url}/act") for _ in range(COPIES)]
            await _pending(hitl, requests)
            results = await asyncio.gather(*(_race(*[
                approve(hitl, r.decision_id, ApproveInput(reviewer="alice", request_id="dbl"))
                for _ in range(2)]) for r in requests))
            finals = await asyncio.gather(*(hitl.wait(r.decision_id, timeout=30)
                                            for r in requests))
    for request, pair, final in zip(requests, results, finals, strict=True):
        # A retry of the same action is answered like the first, never refused.
        assert [_kind(x) for x in pair] == ["accepted", "accepted"], pair
        assert [r.request_id for r in final.reviews] == ["dbl"]
        assert target.effects[f"{request.decision_id}:execute"] == 1
    summary("race_same_update_twice", decisions=COPIES, races=COPIES,
            executed=sum(target.effects.values()), duplicates=0)


async def test_the_same_signal_twice_concurrently_is_one_review(
        hitl_worker: WorkerFactory) -> None:
    target = KeyedTarget()
    with serve_target(target) as http:
        async with hitl_worker() as hitl:
            requests = [_queued(f"{http.url}/act") for _ in range(COPIES)]
            await _pending(hitl, requests)
            review = ApproveInput(reviewer="alice", request_id="sig-1")
            await asyncio.gather(*(signal(hitl, r.decision_id, "approve", review)
                                   for r in requests for _ in range(3)))
            finals = await asyncio.gather(*(hitl.wait(r.decision_id, timeout=30)
                                            for r in requests))
    for request, final in zip(requests, finals, strict=True):
        assert final.status is DecisionStatus.EXECUTED
        assert [r.request_id for r in final.reviews] == ["sig-1"]
        assert target.effects[f"{request.decision_id}:execute"] == 1
    summary("race_same_signal_thrice", decisions=COPIES, signals=3 * COPIES,
            executed=sum(target.effects.values()), duplicates=0)


async def test_signal_and_update_from_two_reviewers_at_once(hitl_worker: WorkerFactory) -> None:
    target = KeyedTarget()
    with serve_target(target) as http:
        async with hitl_worker() as hitl:
            requests = [_queued(f"{http.url}/act") for _ in range(COPIES)]
            await _pending(hitl, requests)

            async def send_signal(did: str) -> ReviewAck:
                await signal(hitl, did, "reject",
                             RejectInput(reviewer="bob", reason="no", request_id="s"))
                return ReviewAck(accepted=True, status=DecisionStatus.PENDING_REVIEW,
                                 message="signal sent")

            races = await asyncio.gather(*(_race(
                approve(hitl, r.decision_id, ApproveInput(reviewer="alice", request_id="u")),
                send_signal(r.decision_id)) for r in requests))
            finals = await asyncio.gather(*(hitl.wait(r.decision_id, timeout=30)
                                            for r in requests))
    outcomes: Counter[str] = Counter()
    for request, final, (update, _signal) in zip(requests, finals, races, strict=True):
        accepted = [r for r in final.reviews if r.accepted]
        assert len(accepted) == 1, final.reviews
        if _kind(update) == "refused" and len(final.reviews) == 1:
            # The signal was applied in an earlier workflow task than the update arrived
            # in: the update's validator refused it (or the run had already finished),
            # so it never entered history.
            assert accepted[0].request_id == "s"
            assert isinstance(update, DecisionClosed) or "already decided" in str(update)
        else:
            assert len(final.reviews) == 2, final.reviews
            refused = next(r for r in final.reviews if not r.accepted)
            assert refused.refusal and "already decided" in refused.refusal
        key = f"{request.decision_id}:execute"
        if accepted[0].request_id == "u":
            assert final.status is DecisionStatus.EXECUTED and target.effects[key] == 1
        else:
            assert final.status is DecisionStatus.REJECTED and key not in target.counts
        outcomes[final.status.value] += 1
    summary("race_signal_vs_update", decisions=COPIES, outcomes=dict(outcomes),
            executed=sum(target.effects.values()), duplicates=0)


async def test_four_eyes_races(hitl_worker: WorkerFactory) -> None:
    """Two distinct approvers at once: both count. One approver twice at once
    (distinct request IDs): one counts. Approve and reject at once: rejected."""
    target = KeyedTarget()
    with serve_target(target) as http:
        async with hitl_worker() as hitl:
            act = f"{http.url}/act"
            pairs = [_four_eyes(act) for _ in range(COPIES)]
            twice = [_four_eyes(act) for _ in range(COPIES)]
            veto = [_four_eyes(act) for _ in range(COPIES)]
            await _pending(hitl, pairs + twice + veto)
            pair_results = await asyncio.gather(*(_race(
                approve(hitl, r.decision_id, ApproveInput(reviewer="alice")),
                approve(hitl, r.decision_id, ApproveInput(reviewer="bob"))) for r in pairs))
            twice_results = await asyncio.gather(*(_race(
                approve(hitl, r.decision_id, ApproveInput(reviewer="alice")),
                approve(hitl, r.decision_id, ApproveInput(reviewer="alice"))) for r in twice))
            veto_results = await asyncio.gather(*(_race(
                approve(hitl, r.decision_id, ApproveInput(reviewer="alice")),
                reject(hitl, r.decision_id, RejectInput(reviewer="bob", reason="no")))
                for r in veto))
            twice_states = await asyncio.gather(*(hitl.status(r.decision_id) for r in twice))
            await asyncio.gather(*(approve(hitl, r.decision_id, ApproveInput(reviewer="carol"))
                                   for r in twice))
            finals = await asyncio.gather(*(hitl.wait(r.decision_id, timeout=30)
                                            for r in pairs + twice + veto))
    for pair in pair_results:
        assert [_kind(x) for x in pair] == ["accepted", "accepted"], pair
    for pair, state in zip(twice_results, twice_states, strict=True):
        assert sorted(map(_kind, pair)) == ["accepted", "refused"], pair
        assert "distinct approvers" in str(next(x for x in pair if not isinstance(x, ReviewAck)))
        assert state.status is DecisionStatus.PENDING_REVIEW and state.approved_by == ["alice"]
    for pair in veto_results:
        assert _kind(pair[1]) == "accepted", pair  # a rejection is never refused here
        assert _kind(pair[0]) in ("accepted", "refused"), pair
    statuses = [f.status for f in finals]
    assert statuses == [DecisionStatus.EXECUTED] * (2 * COPIES) + [DecisionStatus.REJECTED] * COPIES
    for request, final in zip(pairs + twice, finals[: 2 * COPIES], strict=True):
        assert len(set(final.approved_by)) == 2
        assert target.effects[f"{request.decision_id}:execute"] == 1
    assert not any(f"{r.decision_id}:execute" in target.counts for r in veto)
    summary("race_four_eyes", decisions=3 * COPIES, races=3 * COPIES,
            executed=sum(target.effects.values()), duplicates=0,
            vetoed=COPIES)


async def test_review_arriving_during_screening_is_held_not_lost(
        hitl_worker: WorkerFactory, judge_server: tuple[LocalServer, Judge]) -> None:
    """The workflow is running (in a slow judge call) when two reviewers race:
    both reviews are held until routing, then exactly one wins."""
    server, judge = judge_server
    judge.delay = 2.0
    target = KeyedTarget()
    with serve_target(target) as http:
        async with hitl_worker(judge_url=server.url) as hitl:
            requests = [_queued(f"{http.url}/act") for _ in range(COPIES)]

            async def race_in_screening(request: DecisionRequest) -> list[Any]:
                await hitl.submit(request)

                async def judging() -> bool:
                    state = await hitl.status(request.decision_id)
                    return state.rules is not None and state.judge is None

                await until(judging, within=20, what="decision in the judge call")
                return await _race(
                    approve(hitl, request.decision_id,
                                 ApproveInput(reviewer="alice", request_id="early")),
                    reject(hitl, request.decision_id, RejectInput(reviewer="bob", reason="x")))

            results = await asyncio.gather(*(race_in_screening(r) for r in requests))
            finals = await asyncio.gather(*(hitl.wait(r.decision_id, timeout=30)
                                            for r in requests))
    for request, pair, final in zip(requests, results, finals, strict=True):
        assert sorted(map(_kind, pair)) == ["accepted", "refused"], pair
        assert final.judge is not None and final.judge.status.value == "passed"
        assert final.escalated_at is not None
        assert all(r.received_at <= final.escalated_at for r in final.reviews), final.reviews
        key = f"{request.decision_id}:execute"
        assert target.effects.get(key, 0) == (1 if final.status is DecisionStatus.EXECUTED
                                              else 0)
    summary("race_during_screening", decisions=COPIES, races=COPIES,
            executed=sum(target.effects.values()), duplicates=0)


async def test_refused_reviewers_racing_a_valid_one_change_nothing(
        hitl_worker: WorkerFactory) -> None:
    """An unknown reviewer and the requester approving their own decision, at the
    same instant as a valid rejection: both refused, the rejection stands."""
    target = KeyedTarget()
    with serve_target(target) as http:
        async with hitl_worker() as hitl:
            requests = [_queued(f"{http.url}/act", context={"requested_by": "mallory"})
                        for _ in range(COPIES)]
            await _pending(hitl, requests)
            results = await asyncio.gather(*(_race(
                approve(hitl, r.decision_id, ApproveInput(reviewer="nobody")),
                approve(hitl, r.decision_id, ApproveInput(reviewer="mallory")),
                reject(hitl, r.decision_id, RejectInput(reviewer="rita", reason="no")),
            ) for r in requests))
            finals = await asyncio.gather(*(hitl.wait(r.decision_id, timeout=30)
                                            for r in requests))
    for unknown, own, rejection in results:
        assert _kind(rejection) == "accepted", rejection
        assert _kind(unknown) == "refused" and _kind(own) == "refused", (unknown, own)
        # Whichever came first, the reason is the reviewer's, or that it was decided.
        assert any(w in str(unknown) for w in ("unknown reviewer", "already decided")), unknown
        assert any(w in str(own) for w in ("cannot approve", "already decided")), own
    assert [f.status for f in finals] == [DecisionStatus.REJECTED] * COPIES
    assert target.counts == Counter()
    summary("race_refused_reviewers", decisions=COPIES, races=COPIES, refused=2 * COPIES,
            executed=0, duplicates=0)
