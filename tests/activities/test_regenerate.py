"""The regeneration activity against a real endpoint on loopback: what a failure may
say in decision state (its kind, never the endpoint's answer) and where it may go."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.regenerate import (
    REGENERATE_INVALID_TYPE,
    REGENERATE_REJECTED_TYPE,
    RegenerateActivities,
)
from hitl.errors import OUTBOUND_REFUSED_TYPE
from hitl.outbound import DEFAULT_POLICY, OutboundPolicy
from hitl.payloads import RegenerateInput, RegenerateResult
from hitl.request import Action
from tests.http_servers import LocalServer

ANSWER = {"output": "technical", "confidence": 0.97}


class Endpoint:
    def __init__(self, status: int = 200, body: bytes = json.dumps(ANSWER).encode()) -> None:
        self.status, self.body = status, body

    def __call__(self, _: dict[str, Any]) -> tuple[int, bytes]:
        return self.status, self.body


def regenerate_input(url: str) -> RegenerateInput:
    return RegenerateInput(decision_id="d-regen-1", attempt=1, url=url,
                           task_type="ticket_classification",
                           action=Action(type="set_label", params={"label": "billing"}),
                           rejected_output="billing", confidence=0.4, reason="wrong")


async def regenerate(url: str, outbound: OutboundPolicy = DEFAULT_POLICY) -> RegenerateResult:
    async with httpx.AsyncClient(follow_redirects=False) as client:
        activities = RegenerateActivities(client=client, outbound=outbound,
                                          max_response_bytes=1024)
        return await ActivityEnvironment().run(activities.regenerate_output,
                                               regenerate_input(url))


def logged(caplog: pytest.LogCaptureFixture, key: str) -> list[object]:
    return [r.__dict__[key] for r in caplog.records if key in r.__dict__]


async def test_an_allowed_endpoint_regenerates() -> None:
    with LocalServer(Endpoint()) as server:
        result = await regenerate(f"{server.url}/regenerate",
                                  OutboundPolicy.from_setting("127.0.0.1"))
    assert (result.output, result.confidence) == ("technical", 0.97)
    assert server.headers[0]["idempotency-key"] == "d-regen-1:regen:1"


async def test_an_endpoint_outside_the_allowlist_is_refused_and_sees_nothing() -> None:
    with LocalServer(Endpoint(), host="127.0.0.2") as outside:
        with pytest.raises(ApplicationError) as caught:
            await regenerate(f"{outside.url}/regenerate",
                             OutboundPolicy.from_setting("127.0.0.1"))
    assert (caught.value.type, caught.value.non_retryable) == (OUTBOUND_REFUSED_TYPE, True)
    assert caught.value.message == (
        "host 127.0.0.2 is not in HITL_OUTBOUND_ALLOW_HOSTS")
    assert outside.connections == 0


@pytest.mark.parametrize("status", [302, 400, 404])
async def test_a_refusal_names_no_status(status: int, caplog: pytest.LogCaptureFixture) -> None:
    with LocalServer(Endpoint(status, b'{"error": "internal detail"}')) as server:
        with pytest.raises(ApplicationError) as caught:
            await regenerate(server.url)
    assert (caught.value.type, caught.value.non_retryable) == (REGENERATE_REJECTED_TYPE, True)
    assert caught.value.message == "regeneration endpoint refused the request"
    assert logged(caplog, "status") == [status]


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_unavailable_is_retried_and_names_no_status(
        status: int, caplog: pytest.LogCaptureFixture) -> None:
    with LocalServer(Endpoint(status)) as server:
        with pytest.raises(RuntimeError, match="^regeneration endpoint unavailable$"):
            await regenerate(server.url)
    assert logged(caplog, "status") == [status]


@pytest.mark.parametrize(("body", "error"), [
    (b"<html>an internal page</html>", "bad fields ['(root)']"),
    (json.dumps({"output": "x"}).encode(), "bad fields ['confidence']"),
    (json.dumps({"output": "x" * 2000, "confidence": 0.9}).encode(), "over 1024 bytes"),
])
async def test_an_invalid_answer_says_nothing_of_its_content(
        body: bytes, error: str, caplog: pytest.LogCaptureFixture) -> None:
    with LocalServer(Endpoint(200, body)) as server:
        with pytest.raises(ApplicationError) as caught:
            await regenerate(server.url)
    assert (caught.value.type, caught.value.non_retryable) == (REGENERATE_INVALID_TYPE, True)
    assert caught.value.message == "regeneration endpoint answered with an invalid result"
    assert logged(caplog, "error") == [error]
