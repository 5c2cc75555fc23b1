"""API fixtures: the real app over a real worker and the dev server.

``make_api``/``api`` run on a SQLite store; ``make_api_any_store``/``api_any_store``
run on the parametrized ``engine`` (SQLite and PostgreSQL), for the main path only,
so the whole suite does not pay for PostgreSQL twice.
"""

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
from tests.reviewing import token_for

# The reviewers the API tests act as: two with every role, one junior.
SENIORS = ("ann", "ben")
JUNIOR = "june"


@dataclass
class Api:
    http: httpx.AsyncClient
    hitl: HitlClient
    tokens: dict[str, str]
    # The store both the worker and the app use: tests read its rows back from here.
    engine: Engine

    def auth(self, reviewer: str) -> dict[str, str]:
        """Headers acting as ``reviewer`` (any registered test reviewer)."""
        return {"Authorization": f"Bearer {self.tokens.get(reviewer, token_for(reviewer))}"}

    async def digest(self, decision_id: str) -> str:
        """The sha256 of the content up for approval now, as the review view shows it."""
        return (await self.hitl.content(decision_id)).sha256

    async def named(self, decision_id: str) -> dict[str, str]:
        """The body field naming the content up for approval now."""
        return {"content_sha256": await self.digest(decision_id)}

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


ApiFactory = Callable[..., contextlib.AbstractAsyncContextManager[Api]]


def api_factory(hitl_worker: WorkerFactory, engine: Engine) -> ApiFactory:
    """The worker and the app on one store: the worker writes the reviews, the queue
    rows and reads the registry there; the app authenticates and lists from it. Two
    stores would pass tests by accident (a token known to one, a row written to the other)."""

    @contextlib.asynccontextmanager
    async def factory(**worker_options: object) -> AsyncIterator[Api]:
        tokens = reviewer_tokens(engine)
        async with hitl_worker(engine=engine, **worker_options) as hitl:
            app = create_app(hitl=hitl, engine=engine)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hitl.test") as http:
                yield Api(http=http, hitl=hitl, tokens=tokens, engine=engine)

    return factory


@pytest.fixture
def make_api(hitl_worker: WorkerFactory, sqlite_engine: Engine) -> ApiFactory:
    """``async with make_api(policy=...) as api`` : app + worker + an HTTP client, on SQLite."""
    return api_factory(hitl_worker, sqlite_engine)


@pytest.fixture
def make_api_any_store(hitl_worker: WorkerFactory, engine: Engine) -> ApiFactory:
    """``make_api`` on each store of the ``engine`` fixture: SQLite, then PostgreSQL in a
    schema of its own that the fixture drops afterwards (skipped where none runs)."""
    return api_factory(hitl_worker, engine)


@pytest.fixture
async def api(make_api: ApiFactory) -> AsyncIterator[Api]:
    async with make_api() as ready:
        yield ready


@pytest.fixture
async def api_any_store(make_api_any_store: ApiFactory) -> AsyncIterator[Api]:
    async with make_api_any_store() as ready:
        yield ready
