"""What an operator sees in the Temporal UI, checked through the same API the UI reads."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client

from hitl.client import HitlClient
from hitl.enums import DecisionStatus
from hitl.policy import load_policy
from hitl.review import RejectInput
from hitl.review_queue import ReviewQueueRow, waiting_page
from tests.conftest import WorkerFactory
from tests.factories import make_request
from tests.reviewing import reject

pytestmark = pytest.mark.timeout(60)


async def _ids(client: Client, query: str) -> set[str]:
    return {execution.id async for execution in client.list_workflows(query)}


async def _eventually(client: Client, query: str, expected: set[str]) -> set[str]:
    for _ in range(100):  # visibility is eventually consistent
        found = await _ids(client, query) & expected
        if found == expected:
            return found
        await asyncio.sleep(0.1)
    return await _ids(client, query) & expected


async def test_every_zone_is_searchable_and_readable(hitl_worker: WorkerFactory,
                                                     client: Client, task_queue: str,
                                                     sqlite_engine: Engine) -> None:
    tq = f'TaskQueue = "{task_queue}"'
    async with hitl_worker() as hitl:
        auto = make_request(confidence=0.95)
        audit = make_request(task_type="content_moderation", outcome="approve", confidence=0.97,
                             action={"type": "approve_post", "params": {"post_id": "p"}})
        queue = make_request(confidence=0.4, action={"reversible": False})
        critical = make_request(task_type="account_deletion", confidence=0.99, action={
            "type": "delete_account", "params": {"account_id": "a"}, "reversible": False})
        await hitl.decide(auto, timeout=20)
        await hitl.decide(audit, timeout=20)
        await hitl.submit(queue)
        await hitl.submit(critical)

        saved_view = f'{tq} AND HitlStatus = "pending_review" AND HitlRisk = "critical"'
        assert await _eventually(client, saved_view, {critical.decision_id}) == {
            critical.decision_id}
        assert await _eventually(client, f'{tq} AND HitlZone = "auto_audit"',
                                 {audit.decision_id}) == {audit.decision_id}
        assert await _eventually(client, f'{tq} AND HitlZone = "auto" AND HitlStatus = '
                                 '"executed"', {auto.decision_id}) == {auto.decision_id}
        pending = await _eventually(client, f'{tq} AND HitlStatus = "pending_review"',
                                    {queue.decision_id, critical.decision_id})
        assert pending == {queue.decision_id, critical.decision_id}
        assert await _ids(client, f'{tq} AND HitlConfidence >= 0.9 AND HitlZone = "queue"') \
            == set()
        assert await _ids(client, f'{tq} AND HitlSlaDeadline > "2000-01-01T00:00:00Z"') >= {
            queue.decision_id, critical.decision_id}

        description = await client.get_workflow_handle(critical.decision_id).describe()
        summary = await description.static_summary()
        details = await description.static_details()
        assert summary == ("account_deletion: delete_account for svc-helpdesk · "
                           "confidence 0.99")
        assert details is not None and "| requested_by | svc-helpdesk |" in details
        metadata = await client.get_workflow_handle(critical.decision_id).query(
            "__temporal_workflow_metadata", result_type=WorkflowMetadata)
        current = metadata.current_details
        assert "waiting for review" in current and "risk: `critical`" in current
        assert "approvals: 0 of 2" in current
        assert f"policy: `{load_policy().full_version}`" in current

        history = await client.get_workflow_handle(critical.decision_id).fetch_history()
        summaries = {client.data_converter.payload_converter.from_payload(
            event.user_metadata.summary, str)
            for event in history.events if event.user_metadata.HasField("summary")}
        assert summaries == {summary, "SLA 5m"}  # none that only repeats an event type

        with Session(sqlite_engine) as session:  # the review queue table, kept by the workflow
            waiting, total = waiting_page(session=session, now=datetime.now(UTC))
        assert [r.decision_id for r in waiting] == [critical.decision_id, queue.decision_id]
        assert total == 2 and waiting[0].priority == 1 and waiting[0].zone == "escalate"
        assert waiting[1].summary.startswith("ticket_classification: set_label")

        await _finish(hitl, queue.decision_id, critical.decision_id)
        with Session(sqlite_engine) as session:
            assert waiting_page(session=session, now=datetime.now(UTC)) == ([], 0)
            left = session.get(ReviewQueueRow, critical.decision_id)
        assert left is not None and left.waiting is False and left.status == "rejected"
        assert await _eventually(client, f'{tq} AND HitlStatus = "rejected"', {
            queue.decision_id, critical.decision_id}) == {queue.decision_id,
                                                           critical.decision_id}


async def _finish(hitl: HitlClient, *decision_ids: str) -> None:
    for decision_id in decision_ids:
        await reject(hitl, decision_id, RejectInput(reviewer="rita", reason="cleanup"))
        assert (await hitl.wait(decision_id, timeout=20)).status is DecisionStatus.REJECTED
