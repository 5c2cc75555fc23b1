"""The approval-integrity attacks, each on the real path: API, CLI, Temporal CLI, worker.

Every test here is one attack that once worked against hitl (see docs/SECURITY.md):
the attack is made the way an adversary would make it, and the test checks that it
is refused with a clear answer and changes nothing, then that the honest path still
works. The dev server, the worker, the HTTP API and the action target are all real.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from temporalio.client import Client

from hitl.content import content_sha256
from hitl.enums import DecisionStatus, RiskLevel
from hitl.request import DecisionRequest, Regenerate
from tests.api.conftest import Api, ApiFactory, until
from tests.conftest import BIN, register_reviewers
from tests.factories import make_request
from tests.http_servers import LocalServer, Target
from tests.workflows.test_regenerate import Regenerator

pytestmark = pytest.mark.timeout(90)

CRITICAL_LIMIT = 10_000


def refund(server: LocalServer, amount: float, *, reversible: bool = False,
           **context: object) -> DecisionRequest:
    return make_request(
        task_type="refund_request", confidence=0.5, output=f"refund ${amount:,.0f}",
        action={"type": "refund", "params": {"amount": amount}, "reversible": reversible,
                "target_url": f"{server.url}/refund"},
        context={"amount": amount, **context})


async def post(api: Api, decision_id: str, verb: str, reviewer: str,
               **body: object) -> tuple[int, dict[str, object]]:
    response = await api.http.post(f"/api/decisions/{decision_id}/{verb}", json=body,
                                   headers=api.auth(reviewer))
    return response.status_code, response.json()


async def view(api: Api, decision_id: str, reviewer: str = "ann") -> dict[str, object]:
    response = await api.http.get(f"/api/decisions/{decision_id}/review",
                                  headers=api.auth(reviewer))
    assert response.status_code == 200, response.text
    data: dict[str, object] = response.json()
    return data


def add(api: Api, *names: str, risks: tuple[RiskLevel, ...] = tuple(RiskLevel)) -> None:
    api.tokens |= register_reviewers(api.engine, names, risks)


# ------------------------------------------------ 1. edit-and-approve and four-eyes

async def test_an_edit_after_one_approval_does_not_execute_on_it(
        make_api: ApiFactory, target_server: tuple[LocalServer, Target]) -> None:
    """alice approves a critical refund; dave edits amount and target. Before: the edit
    executed on alice's one approval of something else. Now: the edit is new content,
    dave's edit its first approval, and it waits for a second approver of the edit."""
    server, hits = target_server
    async with make_api() as api:
        add(api, "dave")
        request = refund(server, 20_000)
        await api.waiting(request)
        shown = (await view(api, request.decision_id, "alice"))["content"]
        assert isinstance(shown, dict)
        status, ack = await post(api, request.decision_id, "approve", "alice",
                                 content_sha256=shown["sha256"])
        assert status == 200 and "1 of 2" in str(ack["message"])
        other = f"{server.url.replace('127.0.0.1', 'localhost')}/elsewhere"
        status, ack = await post(api, request.decision_id, "edit", "dave",
                                 content_sha256=shown["sha256"], action={
                                     "type": "refund", "params": {"amount": 99_999},
                                     "reversible": False, "target_url": other})
        assert status == 200 and "1 of 2" in str(ack["message"]), ack
        state = await api.hitl.status(request.decision_id)
        assert state.status is DecisionStatus.PENDING_REVIEW and state.approved_by == ["dave"]
        assert hits.counts == {}
        # The view shows the edit, as a diff against the proposal, with its own digest.
        edited = (await view(api, request.decision_id, "ben"))["content"]
        assert isinstance(edited, dict)
        assert edited["edited_by"] == "dave" and edited["sha256"] != shown["sha256"]
        assert any("99999" in line for line in edited["diff"])  # type: ignore[union-attr]
        status, _ = await post(api, request.decision_id, "approve", "ben",
                               content_sha256=edited["sha256"])
        assert status == 200
        final = await api.hitl.wait(request.decision_id, timeout=30)
    assert final.status is DecisionStatus.EXECUTED and final.approved_by == ["dave", "ben"]
    assert [d.output for d in final.deliveries] == [request.output]


async def test_approving_as_proposed_never_approves_an_edit_not_shown(
        make_api: ApiFactory, target_server: tuple[LocalServer, Target]) -> None:
    """dave edits first; alice, whose page still shows the proposal, approves it. Before:
    her "approve as proposed" approved dave's edit. Now: 409, reload, nothing counted."""
    server, hits = target_server
    async with make_api() as api:
        add(api, "dave")
        request = refund(server, 20_000)
        await api.waiting(request)
        proposal = content_sha256(request.output, request.action)
        status, _ = await post(api, request.decision_id, "edit", "dave",
                               content_sha256=proposal, output="refund $12,000")
        assert status == 200
        status, answer = await post(api, request.decision_id, "approve", "alice",
                                    content_sha256=proposal)
        assert status == 409 and "changed since you loaded it" in str(answer["detail"])
        state = await api.hitl.status(request.decision_id)
        assert state.approved_by == ["dave"] and state.status is DecisionStatus.PENDING_REVIEW
        assert [r.reviewer for r in state.reviews] == ["dave"]  # the conflict never landed
        assert hits.counts == {}
        await post(api, request.decision_id, "reject", "ann",
                   content_sha256=(await api.hitl.content(request.decision_id)).sha256)


async def test_an_edit_is_screened_again_and_its_risk_sets_role_and_approvers(
        make_api: ApiFactory, target_server: tuple[LocalServer, Target]) -> None:
    """A high-role reviewer edits a medium refund to 5,000,000. Before: it executed on
    that one approval. Now: the edit is critical, hal may not decide critical: refused,
    nothing changed; a critical-role edit to the same amount needs a second approver."""
    server, hits = target_server
    async with make_api() as api:
        add(api, "hal", risks=(RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH))
        request = refund(server, 500)
        await api.waiting(request)
        digest = content_sha256(request.output, request.action)
        big = {"type": "refund", "params": {"amount": 5_000_000}, "reversible": False,
               "target_url": request.action.target_url}
        status, answer = await post(api, request.decision_id, "edit", "hal",
                                    content_sha256=digest, action=big)
        assert status == 403 and "raises the risk to critical" in str(answer["detail"])
        state = await api.hitl.status(request.decision_id)
        assert state.edit is None and state.risk is RiskLevel.MEDIUM and state.approved_by == []
        status, answer = await post(api, request.decision_id, "edit", "ann",
                                    content_sha256=digest, action=big)
        assert status == 200 and "1 of 2" in str(answer["message"])
        state = await api.hitl.status(request.decision_id)
        assert (state.risk, state.approvals_required) == (RiskLevel.CRITICAL, 2)
        # Screened again: the rules fired on the edited amount, shown with the edit.
        assert state.edit is not None and "amount_limit" in state.edit.rule_failures
        assert hits.counts == {}
        await post(api, request.decision_id, "reject", "ben",
                   content_sha256=state.edit.sha256)
        final = await api.hitl.wait(request.decision_id, timeout=30)
    assert final.status is DecisionStatus.REJECTED and hits.counts == {}


# ------------------------------------------------------------ 2. regenerated output

async def test_after_a_regeneration_reviewers_see_and_approve_the_new_output(
        make_api: ApiFactory, target_server: tuple[LocalServer, Target]) -> None:
    """Before: after reject -> regenerate, the view showed the original output while an
    approval executed the regenerated one. Now the view shows the new output and an
    approval naming the old one is a conflict."""
    server, hits = target_server
    regenerator = Regenerator(("refund $40, the damaged item only", 0.55))
    with LocalServer(regenerator) as regen_server:
        regenerator.server = regen_server
        async with make_api() as api:
            request = refund(server, 400).model_copy(update={
                "regenerate": Regenerate(url=f"{regen_server.url}/regen")})
            await api.waiting(request)
            first = content_sha256(request.output, request.action)
            status, _ = await post(api, request.decision_id, "reject", "ann",
                                   content_sha256=first, reason="only the damaged item")
            assert status == 200

            async def regenerated() -> bool:
                state = await api.hitl.status(request.decision_id)
                return state.attempt == 1 and state.status is DecisionStatus.PENDING_REVIEW

            await until(regenerated)
            shown = await view(api, request.decision_id, "ben")
            content = shown["content"]
            assert isinstance(content, dict)
            assert content["output"] == "refund $40, the damaged item only"
            assert content["sha256"] != first
            status, answer = await post(api, request.decision_id, "approve", "ben",
                                        content_sha256=first)
            assert status == 409 and "changed" in str(answer["detail"])
            status, _ = await post(api, request.decision_id, "approve", "ben",
                                   content_sha256=content["sha256"])
            assert status == 200
            final = await api.hitl.wait(request.decision_id, timeout=30)
    assert final.status is DecisionStatus.EXECUTED
    assert final.final_output == "refund $40, the damaged item only"


# ------------------------------------------------------ 3. identity on every path

def _temporal(client: Client, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "temporal"), "workflow", *args, "--address",
                           client.service_client.config.target_host, "--namespace",
                           client.namespace], capture_output=True, text=True, timeout=30)


async def test_unproven_temporal_cli_signals_cannot_approve(
        make_api: ApiFactory, client: Client, target_server: tuple[LocalServer, Target]) -> None:
    """Before: two `temporal workflow signal` calls naming two registered reviewers
    executed a critical decision. Now both are refused, unproven, and counted."""
    server, hits = target_server
    async with make_api() as api:
        request = refund(server, 20_000)
        await api.waiting(request)
        digest = content_sha256(request.output, request.action)
        for name in ("ann", "ben"):
            payload = {"reviewer": name, "reason": "lgtm", "request_id": f"forged-{name}",
                       "content_sha256": digest}
            result = await asyncio.to_thread(
                _temporal, client, "signal", "--workflow-id", request.decision_id,
                "--name", "approve", "--input", json.dumps(payload))
            assert result.returncode == 0, result.stderr

        async def both_refused() -> bool:
            return (await api.hitl.status(request.decision_id)).refused == 2

        await until(both_refused)
        state = await api.hitl.status(request.decision_id)
        assert state.status is DecisionStatus.PENDING_REVIEW and state.approved_by == []
        assert all(not r.accepted and "no proof" in (r.refusal or "") for r in state.reviews)
        # A real reviewer's signed update through the temporal CLI works.
        signed = await asyncio.to_thread(subprocess.run, [
            str(BIN / "hitl"), "approve", request.decision_id, "--reviewer", "ann",
            "--digest", digest, "--sign-only"], capture_output=True, text=True, timeout=30,
            env={**os.environ, "HITL_REVIEWER_TOKEN": api.tokens["ann"]})
        assert signed.returncode == 0, signed.stderr
        result = await asyncio.to_thread(
            _temporal, client, "update", "execute", "--workflow-id", request.decision_id,
            "--name", "approve", "--input", signed.stdout.strip())
        assert result.returncode == 0 and "1 of 2" in result.stdout, result
        assert hits.counts == {}
        await post(api, request.decision_id, "reject", "ben", content_sha256=digest)


async def test_the_hitl_cli_needs_the_reviewers_own_token(
        make_api: ApiFactory, client: Client, task_queue: str, tmp_path: Path,
        target_server: tuple[LocalServer, Target]) -> None:
    """Before: `hitl approve ID --reviewer carol` needed no credential. Now: no token is
    exit 2 with one line; another reviewer's token is refused by the workflow."""
    server, hits = target_server
    env = {**os.environ, "HITL_TEMPORAL_ADDRESS": client.service_client.config.target_host,
           "HITL_NAMESPACE": client.namespace, "HITL_TASK_QUEUE": task_queue,
           "HITL_DATA_DIR": str(tmp_path)}
    env.pop("HITL_REVIEWER_TOKEN", None)
    async with make_api() as api:
        request = refund(server, 400)
        await api.waiting(request)
        digest = content_sha256(request.output, request.action)
        command = [str(BIN / "hitl"), "approve", request.decision_id, "--reviewer", "ann",
                   "--digest", digest[:16]]
        bare = await asyncio.to_thread(subprocess.run, command, capture_output=True,
                                       text=True, timeout=60, env=env)
        assert bare.returncode == 2 and bare.stderr.count("\n") == 1, bare.stderr
        assert "HITL_REVIEWER_TOKEN" in bare.stderr and "Traceback" not in bare.stderr
        stolen = await asyncio.to_thread(subprocess.run, command, capture_output=True,
                                         text=True, timeout=60,
                                         env={**env, "HITL_REVIEWER_TOKEN": api.tokens["june"]})
        assert stolen.returncode == 2 and "not signed with this reviewer's" in stolen.stderr, (
            stolen)
        assert (await api.hitl.status(request.decision_id)).approved_by == []
        mine = await asyncio.to_thread(subprocess.run, command, capture_output=True,
                                       text=True, timeout=60,
                                       env={**env, "HITL_REVIEWER_TOKEN": api.tokens["ann"]})
        assert mine.returncode == 0, mine.stderr
        final = await api.hitl.wait(request.decision_id, timeout=30)
    assert final.status is DecisionStatus.EXECUTED and final.approved_by == ["ann"]


# -------------------------------------------------------------- 4. bounded state

async def test_refused_actions_cannot_wedge_a_decision(
        make_api: ApiFactory, target_server: tuple[LocalServer, Target]) -> None:
    """Before: ~20 refused rejects carrying a 100 KB correct answer made the state 500 and
    the workflow loop on PAYLOADS_TOO_LARGE after approval. Now they are counted, a few
    kept truncated, and the decision completes."""
    server, hits = target_server
    async with make_api() as api:
        request = refund(server, 400)
        await api.waiting(request)
        digest = content_sha256(request.output, request.action)
        handle = api.hitl.temporal.get_workflow_handle(request.decision_id)
        big = "x" * 100_000
        for index in range(25):
            await handle.signal("reject", {"reviewer": f"nobody-{index}", "reason": "x",
                                           "correct_answer": big, "content_sha256": digest,
                                           "request_id": f"junk-{index}"})

        async def counted() -> bool:
            return (await api.hitl.status(request.decision_id)).refused == 25

        await until(counted, within=30)
        state = await api.http.get(f"/api/decisions/{request.decision_id}")
        assert state.status_code == 200 and len(state.content) < 50_000
        status, _ = await post(api, request.decision_id, "approve", "ann", content_sha256=digest)
        assert status == 200
        final = await api.hitl.wait(request.decision_id, timeout=30)
        history = await handle.fetch_history()
    assert final.status is DecisionStatus.EXECUTED and final.refused == 25
    assert len([r for r in final.reviews if not r.accepted]) == 10
    assert not any(e.HasField("workflow_task_failed_event_attributes") for e in history.events)


# ------------------------------------------------------------- 7. look-alike names

async def test_a_respelled_requester_cannot_approve_their_own_decision(
        make_api: ApiFactory, target_server: tuple[LocalServer, Target]) -> None:
    """Before: reviewer svc-billing approved a decision requested by SVC-Billing,
    "svc-billing " or svc-billing + a zero-width space. Now each is self-approval."""
    server, hits = target_server
    async with make_api() as api:
        add(api, "svc-billing")
        for spelling in ("SVC-Billing", "svc-billing ", "svc-billing\u200b", "svc-b\u0456lling"):
            request = refund(server, 400, requested_by=spelling)
            await api.waiting(request)
            status, answer = await post(api, request.decision_id, "approve", "svc-billing",
                                        content_sha256=content_sha256(request.output,
                                                                      request.action))
            assert status == 403 and "cannot approve" in str(answer["detail"]), spelling
            await post(api, request.decision_id, "reject", "svc-billing",
                       content_sha256=content_sha256(request.output, request.action))
    assert hits.counts == {}


@pytest.mark.parametrize("name", ["Carol", "carol\u200b", "c\u0430rol", "ca rol", "\u0441arol"])
def test_the_registry_refuses_look_alike_reviewer_names(tmp_path: Path, name: str) -> None:
    """Before: Carol, carol + zero-width space and a Cyrillic cаrol were three reviewers.
    Now `hitl reviewers add` refuses each beside carol, exit 2 with one line."""
    env = {**os.environ, "HITL_DATA_DIR": str(tmp_path / "registry")}
    first = subprocess.run([str(BIN / "hitl"), "reviewers", "add", "carol", "--risks", "all"],
                           capture_output=True, text=True, timeout=60, env=env)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([str(BIN / "hitl"), "reviewers", "add", name, "--risks", "all"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert "name:" in second.stderr and "token" not in second.stdout
    listing = subprocess.run([str(BIN / "hitl"), "reviewers", "list"], capture_output=True,
                             text=True, timeout=60, env=env)
    assert listing.stdout.split()[0] == "carol" and listing.stdout.count("\n") == 1
