"""Record workflow histories of representative decisions for the replay test.

Run after an *intentional* change to DecisionWorkflow's command sequence (and
only then, together with a versioning plan for running workflows):

    .venv/bin/python scripts/record_histories.py [SCENARIO ...]

Writes tests/histories/<scenario>.json. Each scenario covers one zone or path.
Name scenarios to record only those: re-recording an existing history hides
exactly the change the replay test is there to catch.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hitl import search_attributes as sa  # noqa: E402
from hitl.client import HitlClient  # noqa: E402
from hitl.connection import data_converter  # noqa: E402
from hitl.content import content_sha256  # noqa: E402
from hitl.enums import ErrorCategory  # noqa: E402
from hitl.policy import Policy, load_policy, parse_policy  # noqa: E402
from hitl.review import ApproveInput, RejectInput  # noqa: E402
from hitl.settings import Settings  # noqa: E402
from hitl.store import init_store, make_engine  # noqa: E402
from tests.conftest import register_reviewers  # noqa: E402
from tests.factories import make_request  # noqa: E402
from tests.http_servers import Judge, LocalServer  # noqa: E402
from tests.reviewing import approve, reject, signal  # noqa: E402
from worker.main import running_worker  # noqa: E402

OUT = ROOT / "tests" / "histories"
BIN = Path(sys.executable).parent
Scenario = Callable[[HitlClient, WorkflowEnvironment], Awaitable[str]]
WANTED = set(sys.argv[1:])  # scenario names to record; all when none are named


async def auto(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    request = make_request(decision_id="replay-auto", confidence=0.95)
    await hitl.decide(request)
    return request.decision_id


async def auto_recorded_locally(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    """AUTO after the final record became a local activity (patch record-decision-local);
    ``auto`` keeps the history from before it."""
    request = make_request(decision_id="replay-auto-local-record", confidence=0.95)
    await hitl.decide(request)
    return request.decision_id


async def auto_folded(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    """AUTO after patch FOLDED: one marker in the first workflow task stands for the
    earlier patches."""
    request = make_request(decision_id="replay-auto-folded", confidence=0.95)
    await hitl.decide(request)
    return request.decision_id


async def auto_audit(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    request = make_request(decision_id="replay-auto-audit", task_type="content_moderation",
                           outcome="approve", confidence=0.97,
                           action={"type": "approve_post", "params": {"post_id": "p1"}})
    await hitl.decide(request)
    return request.decision_id


async def queue_rejected(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    request = make_request(decision_id="replay-queue-rejected", confidence=0.4)
    await hitl.submit(request)
    await reject(hitl, request.decision_id, RejectInput(
        reviewer="bob", reason="wrong", correct_answer="technical", request_id="r1",
        error_category=ErrorCategory.WRONG_LABEL))
    await hitl.wait(request.decision_id)
    return request.decision_id


async def _four_eyes_with_refusal(hitl: HitlClient, decision_id: str) -> str:
    request = make_request(decision_id=decision_id, task_type="account_deletion",
                           confidence=0.99, context={"requested_by": "mallory"},
                           action={"type": "delete_account", "params": {"account_id": "a"},
                                   "reversible": False})
    await hitl.submit(request)
    await signal(hitl, request.decision_id, "approve", ApproveInput(reviewer="mallory",
                                                                   request_id="self"))
    await approve(hitl, request.decision_id, ApproveInput(reviewer="alice", request_id="a1"))
    await approve(hitl, request.decision_id, ApproveInput(reviewer="bob", request_id="b1"))
    await hitl.wait(request.decision_id)
    return request.decision_id


async def escalate_approved_with_refusal(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    return await _four_eyes_with_refusal(hitl, "replay-escalate-approved")


async def approval_written_with_execution(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    """Four-eyes with a refusal, after the deciding review began riding in the
    executor's activity (patch review-with-execution); the refusal and the first
    approval are still written on their own."""
    return await _four_eyes_with_refusal(hitl, "replay-approval-with-execution")


async def approval_folded(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    """``approval_written_with_execution`` after patch FOLDED: no patch marker after
    the approvals."""
    return await _four_eyes_with_refusal(hitl, "replay-approval-folded")


async def judge_error(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    request = make_request(decision_id="replay-judge-error", confidence=0.99)
    await hitl.submit(request)
    await reject(hitl, request.decision_id, RejectInput(reviewer="bob", reason="x",
                                                       request_id="r1"))
    await hitl.wait(request.decision_id)
    return request.decision_id


async def _rejected_after_provisional(hitl: HitlClient, env: WorkflowEnvironment,
                                      decision_id: str) -> str:
    request = make_request(decision_id=decision_id, confidence=0.5)
    await hitl.submit(request)
    await env.sleep(3700)
    await signal(hitl, request.decision_id, "reject", RejectInput(
        reviewer="bob", reason="wrong", correct_answer="technical", request_id="r1"))
    await hitl.wait(request.decision_id)
    return request.decision_id


async def provisional_revised(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    return await _rejected_after_provisional(hitl, env, "replay-provisional-revised")


async def provisional_revision_with_review(hitl: HitlClient,
                                           env: WorkflowEnvironment) -> str:
    """``provisional_revised`` after patch review-with-execution: the rejection is
    written by the revision's executor activity."""
    return await _rejected_after_provisional(hitl, env, "replay-provisional-revision-review")


async def provisional_folded(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    """``provisional_revision_with_review`` after patch FOLDED."""
    return await _rejected_after_provisional(hitl, env, "replay-provisional-folded")


async def irreversible_expired(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    request = make_request(decision_id="replay-expired", task_type="price_adjustment",
                           confidence=0.5, action={"type": "adjust_price", "reversible": False,
                                                   "params": {"sku": "s", "new_price": 1}})
    await hitl.submit(request)
    await env.sleep(25 * 3600)
    await hitl.wait(request.decision_id)
    return request.decision_id


def regenerator(body: dict[str, Any]) -> tuple[int, bytes]:
    """A regeneration endpoint whose new output passes screening (AUTO)."""
    return 200, json.dumps({"output": "technical", "confidence": 0.96}).encode()


async def _rejected_then_regenerated(hitl: HitlClient, decision_id: str) -> str:
    with LocalServer(regenerator) as server:
        request = make_request(decision_id=decision_id, confidence=0.4,
                               regenerate={"url": f"{server.url}/regenerate"})
        await hitl.submit(request)
        await reject(hitl, request.decision_id, RejectInput(
            reviewer="bob", reason="technical ticket", correct_answer="technical",
            request_id="r1", error_category=ErrorCategory.WRONG_LABEL))
        await hitl.wait(request.decision_id)
    return request.decision_id


async def regenerated(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    return await _rejected_then_regenerated(hitl, "replay-regenerated")


async def blind_double_review(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    request = make_request(decision_id="replay-blind", confidence=0.4)
    await hitl.submit(request)
    await reject(hitl, request.decision_id, RejectInput(reviewer="bob", reason="no",
                                                       request_id="r1"))
    await approve(hitl, request.decision_id, ApproveInput(reviewer="alice", request_id="a1"))
    await hitl.wait(request.decision_id)
    return request.decision_id


async def bound_four_eyes_edit(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    """Reviews bound to content and proven (FOLDED_BOUND): an unproven signal and the
    requester refused, one approval, an edit screened again (its own approvals), and the
    edit approved by a second reviewer."""
    request = make_request(decision_id="replay-bound-edit", task_type="refund_request",
                           confidence=0.5, context={"amount": 20_000, "requested_by": "mallory"},
                           action={"type": "refund", "params": {"amount": 20_000},
                                   "reversible": False})
    await hitl.submit(request)
    shown = content_sha256(request.output, request.action)
    await hitl.temporal.get_workflow_handle(request.decision_id).signal("approve", {
        "reviewer": "alice", "request_id": "forged", "content_sha256": shown})
    await signal(hitl, request.decision_id, "approve", ApproveInput(reviewer="mallory",
                                                                     request_id="self"))
    await approve(hitl, request.decision_id, ApproveInput(reviewer="alice", request_id="a1"))
    await approve(hitl, request.decision_id, ApproveInput(
        reviewer="bob", request_id="b1", content_sha256=shown,
        action=request.action.model_copy(update={"params": {"amount": 15_000}})))
    await approve(hitl, request.decision_id, ApproveInput(reviewer="alice", request_id="a2"))
    await hitl.wait(request.decision_id)
    return request.decision_id


async def bound_regenerated(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    """``regenerated`` with bound reviews: the rejection names the first output."""
    return await _rejected_then_regenerated(hitl, "replay-bound-regenerated")


async def bound_after_upgrade(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    """A decision started without FOLDED_BOUND (left inactive, as during a rolling
    upgrade) and reviewed after: BOUND is asked when the review arrives."""
    return await _four_eyes_with_refusal(hitl, "replay-bound-after-upgrade")


async def bound_provisional_revised(hitl: HitlClient, env: WorkflowEnvironment) -> str:
    """``provisional_folded`` with bound reviews."""
    return await _rejected_after_provisional(hitl, env, "replay-bound-provisional")


def blind_policy() -> Policy:
    data = load_policy().model_dump(mode="json")
    data["review"]["double_blind_rate"] = 1.0
    return parse_policy(data)


async def record(env: WorkflowEnvironment, scenarios: list[Scenario], *,
                 policy: Policy | None = None, **settings: str) -> None:
    scenarios = [s for s in scenarios if not WANTED or s.__name__ in WANTED]
    if not scenarios:
        return
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/hitl.db")
        init_store(engine)
        register_reviewers(engine)
        config = Settings(task_queue="replay", data_dir=Path(tmp), **settings)  # type: ignore[arg-type]
        async with running_worker(env.client, config, policy=policy or load_policy(),
                                  engine=engine):
            hitl = HitlClient(env.client, task_queue="replay")
            for scenario in scenarios:
                decision_id = await scenario(hitl, env)
                history = await env.client.get_workflow_handle(decision_id).fetch_history()
                (OUT / f"{scenario.__name__}.json").write_text(history.to_json())
                print(f"recorded {scenario.__name__}")


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    converter = data_converter()
    async with await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(BIN / "temporal"), search_attributes=sa.ALL,
            data_converter=converter) as env:
        await record(env, [auto, auto_recorded_locally, auto_folded, auto_audit,
                           queue_rejected, escalate_approved_with_refusal,
                           approval_written_with_execution, approval_folded, regenerated])
        await record(env, [bound_four_eyes_edit, bound_regenerated])
        await record(env, [bound_after_upgrade], inactive_patches="folded-2026-12")
        await record(env, [blind_double_review], policy=blind_policy())
        judge = Judge()
        judge.mode = "garbage"
        with LocalServer(judge) as server:
            await record(env, [judge_error], judge_url=server.url)
    async with await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=str(BIN / "temporal-test-server"),
            data_converter=converter) as env:
        await sa.register(env.client)
        await record(env, [provisional_revised, provisional_revision_with_review,
                           provisional_folded, irreversible_expired,
                           bound_provisional_revised])


if __name__ == "__main__":
    asyncio.run(main())
