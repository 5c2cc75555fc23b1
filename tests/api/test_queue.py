"""The review queue: sorting and paging (pure), and the API's store-backed queue.

``GET /api/queue`` reads ``StoreQueue`` (the ``review_queue`` table the workflow keeps
current), not Temporal visibility; ``VisibilityQueue`` is measured by
``tests/api/bench_queue_source.py``. The table's SQL on PostgreSQL is covered in
``tests/hitl/test_review_queue.py``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hitl.api.queue import QueueQuery, paginate
from hitl.client import QueueItem
from tests.api.conftest import Api, until
from tests.conftest import test_policy
from tests.factories import make_request

pytestmark = pytest.mark.timeout(60)
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _item(name: str, priority: int | None, minutes: int | None) -> QueueItem:
    return QueueItem(decision_id=name, task_type="t", status="pending_review", zone="queue",
                     risk="low", confidence=0.5, priority=priority, overdue=False,
                     sla_deadline=None if minutes is None else NOW + timedelta(minutes=minutes))


def test_sorted_by_priority_then_deadline_and_paged() -> None:
    items = [_item("batch-late", 3, 50), _item("urgent", 1, 4), _item("batch-soon", 3, 10),
             _item("overdue", 0, -5), _item("no-deadline", 3, None), _item("unknown", None, 1)]
    first = paginate(items, QueueQuery(limit=4))
    assert [i.decision_id for i in first.items] == ["overdue", "urgent", "batch-soon",
                                                    "batch-late"]
    assert (first.total, first.next_offset) == (6, 4)
    last = paginate(items, QueueQuery(limit=4, offset=4))
    assert [i.decision_id for i in last.items] == ["no-deadline", "unknown"]
    assert last.next_offset is None
    assert paginate(items, QueueQuery(limit=4, offset=10)).items == []


async def test_store_queue_filters_sorts_and_pages_through_the_api(
        make_api: Callable[..., contextlib.AbstractAsyncContextManager[Api]]) -> None:
    """The default ``StoreQueue`` over rows a real worker wrote: filters, urgency order,
    paging and the overdue state that comes from an SLA passing."""
    task = f"queue-{uuid.uuid4().hex[:8]}"  # its own task type: other tests' decisions stay out
    irreversible = {"type": "refund", "params": {"amount": 5}, "reversible": False}
    batch_first = make_request(task_type=task, confidence=0.5, action=irreversible)
    batch_second = make_request(task_type=task, confidence=0.4, action=irreversible)
    # New users raise risk to high: escalated, with the 1 s SLA of this policy.
    provisional = make_request(task_type=task, confidence=0.5, context={"is_new_user": True},
                               action={"reversible": True})
    overdue = make_request(task_type=task, confidence=0.5, context={"is_new_user": True},
                           action=irreversible)
    async with make_api(policy=test_policy(sla={"escalate": 1.0})) as api:
        for request in (batch_first, batch_second, provisional, overdue):
            await api.waiting(request)
        headers = api.auth("ann")

        async def page(**params: Any) -> dict[str, Any]:
            response = await api.http.get("/api/queue", params={"task_type": task, **params},
                                          headers=headers)
            assert response.status_code == 200, response.text
            result: dict[str, Any] = response.json()
            return result

        # The SLAs passed and the workflow's background writes to the queue table landed.
        async def settled() -> bool:
            items = (await page())["items"]
            return [(i["status"], i["overdue"]) for i in items] == [
                ("pending_review", True), ("provisional", False),
                ("pending_review", False), ("pending_review", False)]

        await until(settled)

        def ids(data: dict[str, Any]) -> list[str]:
            return [i["decision_id"] for i in data["items"]]

        everything = await page()
        assert ids(everything) == [overdue.decision_id, provisional.decision_id,
                                   batch_first.decision_id, batch_second.decision_id]
        assert [i["priority"] for i in everything["items"]] == [0, 1, 3, 3]
        assert everything["total"] == 4 and everything["next_offset"] is None

        assert ids(await page(zone="escalate")) == [overdue.decision_id,
                                                     provisional.decision_id]
        assert ids(await page(risk="medium")) == [batch_first.decision_id,
                                                   batch_second.decision_id]
        assert ids(await page(overdue="true")) == [overdue.decision_id]
        assert ids(await page(overdue="false")) == ids(everything)[1:]
        first = await page(limit=3)
        assert ids(first) == ids(everything)[:3] and first["next_offset"] == 3
        rest = await page(limit=3, offset=first["next_offset"])
        assert ids(rest) == ids(everything)[3:] and rest["next_offset"] is None
        assert rest["total"] == 4

        bad = await api.http.get("/api/queue", params={"zone": "nowhere"}, headers=headers)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "zone"]
        too_big = await api.http.get("/api/queue", params={"limit": 1000}, headers=headers)
        assert too_big.status_code == 422

        for request in (batch_first, batch_second, provisional, overdue):
            response = await api.http.post(f"/api/decisions/{request.decision_id}/reject",
                                           json={**await api.named(request.decision_id),
                                                 "reason": "cleanup"}, headers=headers)
            assert response.status_code == 200
            await api.hitl.wait(request.decision_id, timeout=20)
