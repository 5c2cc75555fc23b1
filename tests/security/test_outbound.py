"""Outbound calls are allowed by policy, end to end through the real worker and API.

With ``HITL_OUTBOUND_ALLOW_HOSTS=127.0.0.1`` a real server on 127.0.0.2 stands for a
host the worker must not reach: an AUTO action, a regeneration and the judge aimed at
it each fail closed, with a reason naming the host and why, and the server sees no
connection at all (counted at accept, backlog included, not per request). Addresses
that must never be reached (metadata, link-local) are refused here only at the API,
which refuses them without resolving or sending anything; the worker's handling of
them is tested as pure functions in tests/hitl/test_outbound.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from temporalio.client import Client

from hitl.api import create_app
from hitl.client import HitlClient
from hitl.enums import DecisionStatus, LayerStatus, Zone
from hitl.outbound import DEFAULT_POLICY, OutboundPolicy
from hitl.review import RejectInput
from tests.conftest import WorkerFactory
from tests.factories import make_request
from tests.http_servers import Judge, LocalServer, Target
from tests.reviewing import reject

pytestmark = pytest.mark.timeout(60)

ALLOW = "127.0.0.1"
OUTSIDE = "127.0.0.2"
NOT_LISTED = f"host {OUTSIDE} is not in HITL_OUTBOUND_ALLOW_HOSTS"
REFUSED = f"OutboundRefused: {NOT_LISTED}"  # as decision state shows it


def outside_target() -> tuple[LocalServer, Target]:
    target = Target()
    server = LocalServer(target, host=OUTSIDE)
    target.server = server
    return server, target


async def _attempts(client: Client, decision_id: str, activity: str) -> list[int]:
    """The attempt number of each start of ``activity`` in the decision's history."""
    history = await client.get_workflow_handle(decision_id).fetch_history()
    scheduled = {e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
                 for e in history.events
                 if e.HasField("activity_task_scheduled_event_attributes")}
    return [e.activity_task_started_event_attributes.attempt for e in history.events
            if e.HasField("activity_task_started_event_attributes")
            and scheduled[e.activity_task_started_event_attributes.scheduled_event_id]
            == activity]


async def test_an_auto_action_outside_the_allowlist_fails_and_the_host_sees_nothing(
        hitl_worker: WorkerFactory, client: Client) -> None:
    server, target = outside_target()
    with server:
        request = make_request(confidence=0.95, action={"target_url": f"{server.url}/act"})
        async with hitl_worker(outbound_allow_hosts=ALLOW) as hitl:
            state = await hitl.decide(request, timeout=20)
        attempts = await _attempts(client, request.decision_id, "execute_action")
    assert (state.zone, state.status) == (Zone.AUTO, DecisionStatus.FAILED)
    assert state.failure == REFUSED
    assert state.deliveries == []
    assert attempts == [1]  # refused for good: not retried
    assert server.connections == 0 and target.counts == {}


async def test_a_regeneration_outside_the_allowlist_ends_rejected_and_sees_nothing(
        hitl_worker: WorkerFactory) -> None:
    server, _ = outside_target()
    with server:
        request = make_request(confidence=0.4, regenerate={"url": f"{server.url}/regenerate"})
        async with hitl_worker(outbound_allow_hosts=ALLOW) as hitl:
            await hitl.submit(request)
            await reject(hitl, request.decision_id, RejectInput(reviewer="bob", reason="no"))
            state = await hitl.wait(request.decision_id, timeout=20)
    assert state.status is DecisionStatus.REJECTED
    assert state.outcome == f"rejected: regeneration 1 failed: {REFUSED}"
    assert state.deliveries == []
    assert server.connections == 0


async def test_a_judge_outside_the_allowlist_sends_the_decision_to_a_person(
        hitl_worker: WorkerFactory) -> None:
    judge = Judge()
    with LocalServer(judge, host=OUTSIDE) as server:
        request = make_request(confidence=0.99)  # AUTO with a passing judge
        async with hitl_worker(judge_url=server.url, outbound_allow_hosts=ALLOW) as hitl:
            await hitl.submit(request)
            await _until_waiting(hitl, request.decision_id)
            state = await hitl.status(request.decision_id)
            await reject(hitl, request.decision_id, RejectInput(reviewer="rita", reason="t"))
            await hitl.wait(request.decision_id, timeout=20)
    assert state.judge is not None and state.judge.status is LayerStatus.ERROR
    assert state.judge.reasons == [REFUSED]
    assert state.zone is Zone.QUEUE and state.deliveries == []
    assert server.connections == 0


async def test_an_action_inside_the_allowlist_still_runs(
        hitl_worker: WorkerFactory, target_server: tuple[LocalServer, Target]) -> None:
    server, target = target_server
    request = make_request(confidence=0.95, action={"target_url": f"{server.url}/act"})
    async with hitl_worker(outbound_allow_hosts=ALLOW) as hitl:
        state = await hitl.decide(request, timeout=20)
    assert (state.zone, state.status) == (Zone.AUTO, DecisionStatus.EXECUTED)
    assert target.counts == {f"{request.decision_id}:execute": 1}
    assert server.headers[0]["host"] == server.url.removeprefix("http://")


async def _until_waiting(hitl: HitlClient, decision_id: str) -> None:
    deadline = asyncio.get_running_loop().time() + 20
    while (await hitl.status(decision_id)).status is not DecisionStatus.PENDING_REVIEW:
        assert asyncio.get_running_loop().time() < deadline, "never waiting for review"
        await asyncio.sleep(0.05)


# ----------------------------------------------------------------------- API

@asynccontextmanager
async def api(hitl: HitlClient, engine: Engine,
              outbound: OutboundPolicy) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(hitl=hitl, engine=engine, outbound=outbound)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://hitl.test") as http:
        yield http


def body(**overrides: Any) -> dict[str, Any]:
    return make_request(**overrides).model_dump(mode="json")


@pytest.mark.parametrize(("policy", "field", "url", "message"), [
    (ALLOW, "target_url", f"http://{OUTSIDE}:9/act", f"outbound request refused: {NOT_LISTED}"),
    (ALLOW, "regenerate", f"http://{OUTSIDE}:9/regenerate",
     f"outbound request refused: {NOT_LISTED}"),
    (ALLOW, "target_url", "http://localhost:9/act",
     "outbound request refused: host localhost is not in HITL_OUTBOUND_ALLOW_HOSTS"),
    (None, "target_url", "http://169.254.169.254/latest/meta-data/",
     "outbound request refused: host 169.254.169.254 is a cloud metadata address"),
    (None, "target_url", "http://[::ffff:169.254.169.254]/latest/meta-data/",
     "outbound request refused: host ::ffff:169.254.169.254 is a cloud metadata address"),
    (None, "regenerate", "http://0xa9fea9fe/",
     "outbound request refused: host 0xa9fea9fe is a cloud metadata address"),
    (None, "target_url", "http://metadata.google.internal/computeMetadata/v1/",
     "outbound request refused: host metadata.google.internal is a cloud metadata host name"),
])
async def test_the_api_refuses_what_the_policy_refuses_naming_the_field(
        client: Client, task_queue: str, sqlite_engine: Engine, policy: str | None,
        field: str, url: str, message: str) -> None:
    hitl = HitlClient(client, task_queue=task_queue)
    outbound = OutboundPolicy.from_setting(policy) if policy else DEFAULT_POLICY
    if field == "target_url":
        request, loc = body(action={"target_url": url}), ["body", "action", "target_url"]
    else:
        request, loc = body(regenerate={"url": url}), ["body", "regenerate", "url"]
    async with api(hitl, sqlite_engine, outbound) as http:
        response = await http.post("/api/decisions", json=request)
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert (error["loc"], error["msg"]) == (loc, message)
        # Refused before anything started.
        assert (await http.get(f"/api/decisions/{request['decision_id']}")).status_code == 404


async def test_the_api_accepts_a_url_inside_the_allowlist(
        hitl_worker: WorkerFactory, sqlite_engine: Engine,
        target_server: tuple[LocalServer, Target]) -> None:
    server, target = target_server
    request = body(confidence=0.95, action={"target_url": f"{server.url}/act"})
    async with hitl_worker(outbound_allow_hosts=ALLOW) as hitl, \
            api(hitl, sqlite_engine, OutboundPolicy.from_setting(ALLOW)) as http:
        response = await http.post("/api/decisions", json=request)
        assert response.status_code == 201, response.text
        state = await hitl.wait(request["decision_id"], timeout=20)
    assert state.status is DecisionStatus.EXECUTED
    assert target.counts == {f"{request['decision_id']}:execute": 1}
