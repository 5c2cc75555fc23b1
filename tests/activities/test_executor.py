"""The executor runs an action once per (decision, phase), on the ledger or over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.executor import ExecutorActivities
from hitl.enums import ExecutionPhase
from hitl.errors import EXECUTION_REJECTED_TYPE, OUTBOUND_REFUSED_TYPE
from hitl.outbound import DEFAULT_POLICY, OutboundPolicy
from hitl.payloads import ExecuteInput, ExecutionResult
from hitl.request import Action
from hitl.settings import Settings
from hitl.store import ExecutionRow, executions_for, find_execution, session_scope
from tests.http_servers import LocalServer, Target

TargetServer = tuple[LocalServer, Target]


def execute_input(target_url: str | None = None, phase: ExecutionPhase = ExecutionPhase.EXECUTE,
                  **overrides: Any) -> ExecuteInput:
    data: dict[str, Any] = {
        "decision_id": f"d-{uuid.uuid4().hex[:16]}", "phase": phase,
        "action": Action(type="refund", params={"amount": 12.5, "currency": "EUR"},
                         reversible=False, target_url=target_url),
        "output": "Refund 12.50 EUR",
    }
    return ExecuteInput(**{**data, **overrides})


async def execute(engine: Engine, data: ExecuteInput,
                  outbound: OutboundPolicy = DEFAULT_POLICY) -> ExecutionResult:
    async with httpx.AsyncClient(follow_redirects=False) as client:
        activities = ExecutorActivities(engine=engine, client=client, outbound=outbound,
                                        settings=Settings(executor_timeout_seconds=5))
        return await ActivityEnvironment().run(activities.execute_action, data)


def rows(engine: Engine, decision_id: str) -> list[ExecutionRow]:
    with session_scope(engine) as session:
        return executions_for(session=session, decision_id=decision_id)


def logged_status(caplog: pytest.LogCaptureFixture) -> list[object]:
    """The remote statuses the worker logged (where they go instead of decision state)."""
    return [r.__dict__["status"] for r in caplog.records if "status" in r.__dict__]


def is_retryable(error: BaseException) -> bool:
    return not (isinstance(error, ApplicationError) and error.non_retryable)


async def test_ledger_executes_once(engine: Engine) -> None:
    data = execute_input()
    first = await execute(engine, data)
    assert (first.executor, first.deduplicated, first.status_code) == ("ledger", False, None)
    assert first.executed_at.utcoffset() is not None
    [row] = rows(engine, data.decision_id)
    assert (row.phase, row.executor, row.action_type) == ("execute", "ledger", "refund")
    assert row.idempotency_key == f"{data.decision_id}:execute"
    assert row.output == "Refund 12.50 EUR"
    assert row.params_json == '{"amount": 12.5, "currency": "EUR"}'

    again = await execute(engine, data.model_copy(update={"output": "something else"}))
    assert again.deduplicated
    assert again.executed_at == first.executed_at
    assert [r.id for r in rows(engine, data.decision_id)] == [row.id]
    assert rows(engine, data.decision_id)[0].output == "Refund 12.50 EUR"


async def test_each_phase_executes_once(engine: Engine) -> None:
    data = execute_input(phase=ExecutionPhase.PROVISIONAL)
    await execute(engine, data)
    confirm = data.model_copy(update={"phase": ExecutionPhase.CONFIRM})
    assert not (await execute(engine, confirm)).deduplicated
    assert (await execute(engine, confirm)).deduplicated
    assert [r.phase for r in rows(engine, data.decision_id)] == ["provisional", "confirm"]


async def test_http_posts_once_with_the_idempotency_key(
        engine: Engine, target_server: TargetServer) -> None:
    server, target = target_server
    data = execute_input(f"{server.url}/actions", may_be_revised=True)
    key = f"{data.decision_id}:execute"
    result = await execute(engine, data)
    assert (result.executor, result.deduplicated, result.status_code) == ("http", False, 200)
    assert target.counts == {key: 1}
    assert server.headers[0]["idempotency-key"] == key
    assert server.requests[0] == {
        "decision_id": data.decision_id, "phase": "execute",
        "action": {"type": "refund", "params": {"amount": 12.5, "currency": "EUR"},
                   "reversible": False},
        "output": "Refund 12.50 EUR", "may_be_revised": True,
    }
    [row] = rows(engine, data.decision_id)
    assert (row.executor, row.status_code, row.target_url) == ("http", 200, data.action.target_url)

    again = await execute(engine, data)
    assert again.deduplicated
    assert again.status_code == 200
    assert target.counts == {key: 1}
    assert len(server.requests) == 1


async def test_http_4xx_is_rejected_for_good_and_not_recorded(
        engine: Engine, target_server: TargetServer, caplog: pytest.LogCaptureFixture) -> None:
    server, target = target_server
    target.status = 400
    data = execute_input(server.url)
    with pytest.raises(ApplicationError) as caught:
        await execute(engine, data)
    assert caught.value.type == EXECUTION_REJECTED_TYPE
    assert caught.value.non_retryable
    # The failure reaches decision state, which anyone may read: it names the class of
    # failure, never the target's status, which goes to the worker log only.
    assert caught.value.message == "action target refused the action"
    assert logged_status(caplog) == [400]
    assert rows(engine, data.decision_id) == []
    assert target.counts == {f"{data.decision_id}:execute": 1}


async def test_http_5xx_is_retried_then_succeeds(
        engine: Engine, target_server: TargetServer, caplog: pytest.LogCaptureFixture) -> None:
    server, target = target_server
    target.status = 503
    data = execute_input(server.url)
    key = f"{data.decision_id}:execute"
    with pytest.raises(RuntimeError, match="^action target unavailable$") as caught:
        await execute(engine, data)
    assert is_retryable(caught.value)
    assert logged_status(caplog) == [503]
    with session_scope(engine) as session:
        assert find_execution(session=session, decision_id=data.decision_id,
                              phase="execute") is None

    # The target recovers; Temporal's retry posts again with the same key.
    target.status = 201
    result = await execute(engine, data)
    assert (result.deduplicated, result.status_code) == (False, 201)
    assert target.counts == {key: 2}
    assert [h["idempotency-key"] for h in server.headers] == [key, key]
    assert len(rows(engine, data.decision_id)) == 1


@pytest.mark.parametrize("status", [408, 409, 429])
async def test_http_transient_4xx_is_retried(
        sqlite_engine: Engine, target_server: TargetServer, status: int,
        caplog: pytest.LogCaptureFixture) -> None:
    # Error mapping only: one store is enough.
    server, target = target_server
    target.status = status
    data = execute_input(server.url)
    with pytest.raises(RuntimeError, match="^action target unavailable$") as caught:
        await execute(sqlite_engine, data)
    assert is_retryable(caught.value)
    assert logged_status(caplog) == [status]
    assert rows(sqlite_engine, data.decision_id) == []


async def test_a_target_outside_the_allowlist_is_refused_and_sees_nothing(
        sqlite_engine: Engine) -> None:
    target = Target()
    with LocalServer(target, host="127.0.0.2") as outside:
        target.server = outside
        data = execute_input(f"{outside.url}/act")
        with pytest.raises(ApplicationError) as caught:
            await execute(sqlite_engine, data, OutboundPolicy.from_setting("127.0.0.1"))
    assert caught.value.type == OUTBOUND_REFUSED_TYPE
    assert caught.value.non_retryable
    assert caught.value.message == (
        "host 127.0.0.2 is not in HITL_OUTBOUND_ALLOW_HOSTS")
    assert outside.connections == 0 and target.counts == {}
    assert rows(sqlite_engine, data.decision_id) == []


async def test_a_target_inside_the_allowlist_runs(
        sqlite_engine: Engine, target_server: TargetServer) -> None:
    server, target = target_server
    data = execute_input(f"{server.url}/act")
    result = await execute(sqlite_engine, data, OutboundPolicy.from_setting("127.0.0.1"))
    assert (result.executor, result.status_code) == ("http", 200)
    assert target.counts == {f"{data.decision_id}:execute": 1}


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_refused_and_not_followed(
        sqlite_engine: Engine, target_server: TargetServer, status: int) -> None:
    server, target = target_server
    elsewhere = Target()
    with LocalServer(elsewhere) as other:
        elsewhere.server = other
        target.status = status
        server.response_headers["Location"] = f"{other.url}/act"
        data = execute_input(f"{server.url}/act")
        with pytest.raises(ApplicationError) as caught:
            await execute(sqlite_engine, data)
    assert (caught.value.type, caught.value.non_retryable) == (EXECUTION_REJECTED_TYPE, True)
    assert caught.value.message == "action target refused the action"
    assert target.counts == {f"{data.decision_id}:execute": 1}
    assert other.connections == 0
