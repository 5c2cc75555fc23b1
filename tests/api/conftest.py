"""API fixtures: the real app over a real worker, the dev server and a SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.engine import Engine

from hitl.api import create_app
from hitl.client import HitlClient
from hitl.enums import DecisionStatus, RiskLevel
from hitl.request import DecisionRequest
from tests.conftest import WorkerFactory, register_reviewers

# The reviewers the API tests act as: two with every role, one junior.
SENIORS = ("ann", "ben")
JUNIOR = "june"


@dataclass
class Api:
    http: httpx.AsyncClient
    hitl: HitlClient
    tokens: dict[str, str]

    def auth(self, reviewer: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[reviewer]}"}

    async def submit(self, request: DecisionRequest) -> None:
        response = await self.http.post("/api/decisions", json=request.model_dump(mode="json"))
        assert response.status_code == 201, response.text

    async def waiting(self, request: DecisionRequest) -> None:
        """Submit and wait until the decision is at the gate."""
        await self.submit(request)
        await until(lambda: self._status_is(request.decision_id, DecisionStatus.PENDING_REVIEW))

    async def _status_is(self, decision_id: str, status: DecisionStatus) -> bool:
        return (await self.hitl.status(decision_id)).status is status


async def until(predicate: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def reviewer_tokens(engine: Engine) -> dict[str, str]:
    tokens = register_reviewers(engine, SENIORS)
    tokens |= register_reviewers(engine, (JUNIOR,), (RiskLevel.LOW, RiskLevel.MEDIUM))
    return tokens


@pytest.fixture
def make_api(hitl_worker: WorkerFactory, sqlite_engine: Engine
             ) -> Callable[..., contextlib.AbstractAsyncContextManager[Api]]:
    """``async with make_api(policy=...) as api`` : app + worker + an HTTP client."""

    @contextlib.asynccontextmanager
    async def factory(**worker_options: object) -> AsyncIterator[Api]:
        tokens = reviewer_tokens(sqlite_engine)
        async with hitl_worker(**worker_options) as hitl:
            app = create_app(hitl=hitl, engine=sqlite_engine)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hitl.test") as http:
                yield Api(http=http, hitl=hitl, tokens=tokens)

    return factory


@pytest.fixture
async def api(make_api: Callable[..., contextlib.AbstractAsyncContextManager[Api]]
              ) -> AsyncIterator[Api]:
    async with make_api() as ready:
        yield ready
