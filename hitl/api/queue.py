"""The review queue: where it is read from, behind one small interface.

``QueueSource`` is what the API needs: one sorted, filtered page and the total.
``VisibilityQueue`` reads Temporal visibility (the search attributes the
workflow keeps current at every transition). The dev server's SQLite
visibility cannot ``ORDER BY`` custom attributes, so it reads every match and
sorts here: cost grows with the number of pending decisions (measured with
``python -m tests.api.bench_queue_source``; numbers in the README). A store
table kept current by the workflow is the scalable source; it plugs in here as
another ``QueueSource`` without touching the routes.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from hitl import search_attributes as sa
from hitl.client import QueueItem, queue_item, queue_sort_key, quote_query_value
from hitl.enums import DecisionStatus, RiskLevel, Zone
from hitl.limits import MAX_OFFSET
from hitl.review_queue import as_queue_item, waiting_page

WAITING = (DecisionStatus.PENDING_REVIEW.value, DecisionStatus.PROVISIONAL.value)
MAX_PAGE = 200



class QueueQuery(BaseModel):
    """Filters and page of a queue listing; every filter is optional."""

    zone: Zone | None = None
    risk: RiskLevel | None = None
    # DecisionRequest.task_type's pattern: a NUL byte here was a 500 on PostgreSQL.
    task_type: str | None = Field(default=None, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    overdue: bool | None = Field(
        default=None, description="true: only overdue; false: only not overdue")
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)  # past it: a store's integer overflow


class QueuePage(BaseModel):
    """One page of the queue, most urgent first: priority (0 overdue, 1 escalated,
    3 batch), then the earliest SLA deadline."""

    items: list[QueueItem]
    total: int = Field(description="matching decisions across all pages")
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")


class QueueSource(Protocol):
    async def page(self, query: QueueQuery) -> QueuePage:
        """The page of waiting decisions matching ``query``, sorted."""
        ...


def paginate(items: list[QueueItem], query: QueueQuery) -> QueuePage:
    """Sort and slice a complete list of matches."""
    items = sorted(items, key=queue_sort_key)
    end = query.offset + query.limit
    return QueuePage(items=items[query.offset:end], total=len(items), limit=query.limit,
                     offset=query.offset, next_offset=end if end < len(items) else None)


class VisibilityQueue:
    """The queue read from Temporal visibility.

    Eventually consistent: a decision appears a moment after it reaches the
    gate and lingers a moment after its verdict (a review then answers 409).
    """

    def __init__(self, temporal: Client) -> None:
        self._temporal = temporal

    async def page(self, query: QueueQuery) -> QueuePage:
        now = datetime.now(UTC)
        items = [queue_item(execution, now)
                 async for execution in self._temporal.list_workflows(_where(query, now))]
        if query.overdue is not None:  # the clause narrows; this makes it exact at `now`
            items = [item for item in items if item.overdue == query.overdue]
        return paginate(items, query)

    async def count(self, query: QueueQuery) -> int:
        """How many match (overdue approximated by the clause); one cheap RPC."""
        result = await self._temporal.count_workflows(_where(query, datetime.now(UTC)))
        return result.count


class StoreQueue:
    """The queue read from the ``review_queue`` table the workflow keeps current.

    One indexed SELECT and a count per page, whatever the number pending (see
    ``hitl.review_queue``); the default source of the API.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def page(self, query: QueueQuery) -> QueuePage:
        return await asyncio.to_thread(self._page, query)

    def _page(self, query: QueueQuery) -> QueuePage:
        now = datetime.now(UTC)
        with Session(self._engine) as session:
            rows, total = waiting_page(
                session=session, now=now, zone=query.zone, risk=query.risk,
                task_type=query.task_type, overdue=query.overdue, limit=query.limit,
                offset=query.offset)
        items = [as_queue_item(row, now) for row in rows]
        end = query.offset + len(items)
        return QueuePage(items=items, total=total, limit=query.limit, offset=query.offset,
                         next_offset=end if end < total else None)


def _where(query: QueueQuery, now: datetime) -> str:
    statuses = ", ".join(f'"{status}"' for status in WAITING)
    clauses = ['ExecutionStatus = "Running"', f"{sa.STATUS.name} IN ({statuses})"]
    for key, value in ((sa.ZONE, query.zone), (sa.RISK, query.risk),
                       (sa.TASK_TYPE, query.task_type)):
        if value is not None:
            clauses.append(f'{key.name} = "{quote_query_value(str(value))}"')
    moment = (now + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if query.overdue is True:
        clauses.append(f'{sa.STATUS.name} = "{DecisionStatus.PENDING_REVIEW.value}"')
        clauses.append(f'{sa.SLA_DEADLINE.name} < "{moment}"')
    return " AND ".join(clauses)
