"""The review queue: waiting decisions, most urgent first, filtered and paged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from hitl.api.auth import CurrentReviewer
from hitl.api.deps import Services, get_services
from hitl.api.queue import QueuePage, QueueQuery

router = APIRouter(prefix="/api", tags=["queue"])


@router.get("/queue", response_model=QueuePage, responses={401: {"description": "sign in"}})
async def queue(query: Annotated[QueueQuery, Query()], reviewer: CurrentReviewer,
                services: Annotated[Services, Depends(get_services)]) -> QueuePage:
    """Decisions waiting for a person (pending review, or delivered provisionally and
    open to revision), sorted by priority (0 overdue, 1 escalated, 3 batch) then SLA
    deadline. ``overdue`` is an irreversible decision past its SLA, still undone."""
    return await services.queue.page(query)
