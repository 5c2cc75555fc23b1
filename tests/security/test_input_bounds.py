"""The largest input the API accepts goes the whole way; one byte more is refused at the door.

On the real dev server, a real worker (with a real judge and action target on
127.0.0.1) and the real API (``tests/api/conftest.py``). The largest accepted
request (an output of 4-byte characters at ``MAX_OUTPUT_BYTES``, params and context
at their limits, 20 candidates of 500 4-byte characters, a 200-character ID) is
submitted, edited to the largest accepted edit (another maximal output and params,
a maximal reason) and approved; it must execute and complete with no failed workflow
task: every payload on the way, the final ``DecisionState`` and ``record_decision``'s
input included, stays within Temporal's limits (``hitl.limits`` keeps the budget).
Then one byte over each limit: a 422 naming the field, or a 413 for the body, with
no workflow started and nothing changed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode

from hitl.enums import DecisionStatus
from hitl.limits import (
    MAX_BODY_BYTES,
    MAX_CONTEXT_BYTES,
    MAX_OFFSET,
    MAX_OUTPUT_BYTES,
    MAX_PARAMS_BYTES,
    MAX_REASON_BYTES,
)
from hitl.payloads import RecordDecisionInput
from hitl.request import DecisionContext, DecisionRequest, stored_size
from hitl.review import ApproveInput
from hitl.state import DecisionState
from hitl.store import DecisionRecord, ReviewRow
from tests.api.conftest import Api, ApiFactory, make_api, until  # noqa: F401
from tests.http_servers import Judge, LocalServer, Target

pytestmark = pytest.mark.timeout(180)

GRIN, CLEF = "\U0001F600", "\U0001D11E"  # 4 bytes of UTF-8 each
MIB = 1024 * 1024
BLOB_LIMIT = 2 * MIB  # Temporal's limit.blobSize.error
REVIEWER = "ann"
REVIEW_EVENTS = {EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED,
                 EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
                 EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
                 EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED}


def _text(nbytes: int, char: str = GRIN) -> str:
    """Exactly ``nbytes`` of UTF-8 (and of JSON): 4-byte characters, ASCII for the rest."""
    quads, rest = divmod(nbytes, 4)
    return char * quads + "x" * rest


def _params(nbytes: int, char: str = GRIN) -> dict[str, Any]:
    """Params of exactly ``nbytes`` as JSON, nested a little, numbers and all."""
    params: dict[str, Any] = {"post_id": "p-1", "scores": [0.5, 1, -2.25e3],
                              "meta": {"by": "svc", "tags": ["a", "b"]}, "blob": ""}
    params["blob"] = _text(nbytes - stored_size(params), char)
    assert stored_size(params) == nbytes
    return params


def _context(nbytes: int) -> dict[str, Any]:
    """A context of exactly ``nbytes`` as JSON (defaults and extras included)."""
    context: dict[str, Any] = {"requested_by": GRIN * 200, "ticket": "", "history": [{"n": 1}]}
    context["ticket"] = _text(nbytes - stored_size(DecisionContext.model_validate(context)))
    assert stored_size(DecisionContext.model_validate(context)) == nbytes
    return context


def _largest_request(target_url: str) -> dict[str, Any]:
    return {
        "decision_id": f"big-{uuid.uuid4().hex}".ljust(200, "0"),
        "task_type": "content_moderation",  # high risk, and not confident: escalated
        "action": {"type": "remove_post", "params": _params(MAX_PARAMS_BYTES),
                   "target_url": target_url, "reversible": False},
        "output": _text(MAX_OUTPUT_BYTES),
        "confidence": 0.5,
        "outcome": "remove",
        "candidates": [{"outcome": GRIN * 500, "score": 0.01} for _ in range(20)],
        "context": _context(MAX_CONTEXT_BYTES),
    }


def _largest_edit(target_url: str) -> dict[str, Any]:
    return {"output": _text(MAX_OUTPUT_BYTES, CLEF), "reason": _text(MAX_REASON_BYTES, CLEF),
            "action": {"type": "remove_post", "params": _params(MAX_PARAMS_BYTES, CLEF),
                       "target_url": target_url, "reversible": False},
            "request_id": "largest-edit"}


async def edit_and_approve(api: Api, decision_id: str, body: dict[str, Any]) -> httpx.Response:
    """The reviewer's edit-and-approve call: the one place that knows its shape (it
    names the content shown; the API signs it as the reviewer)."""
    return await api.http.post(f"/api/decisions/{decision_id}/edit",
                               json={**await api.named(decision_id), **body},
                               headers=api.auth(REVIEWER))


@pytest.fixture
def target() -> Iterator[tuple[LocalServer, Target]]:
    target = Target()
    with LocalServer(target) as server:
        target.server = server
        yield server, target


@pytest.fixture
async def api(make_api: ApiFactory) -> AsyncIterator[Api]:  # noqa: F811
    judge = Judge()
    with LocalServer(judge) as judge_server:
        async with make_api(judge_url=judge_server.url) as ready:
            yield ready


async def _history(api: Api, decision_id: str) -> WorkflowHistory:
    return await api.hitl.temporal.get_workflow_handle(decision_id).fetch_history()


def _failed_tasks(history: WorkflowHistory) -> list[str]:
    return [event.workflow_task_failed_event_attributes.failure.message
            for event in history.events
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]


async def _waiting(api: Api, decision_id: str) -> None:
    async def pending() -> bool:
        response = await api.http.get(f"/api/decisions/{decision_id}")
        return (response.status_code == 200
                and response.json()["status"] == DecisionStatus.PENDING_REVIEW.value)
    await until(pending, within=60)


async def _never_started(api: Api, decision_id: str) -> None:
    with pytest.raises(RPCError) as missing:
        await api.hitl.temporal.get_workflow_handle(decision_id).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND
    with Session(api.engine) as session:
        assert session.get(DecisionRecord, decision_id) is None


def _names(response: httpx.Response, *loc: str) -> None:
    assert response.status_code == 422, response.text[:500]
    assert [error["loc"] for error in response.json()["detail"]] == [["body", *loc]]


# ------------------------------------------------------------------ the whole path

async def test_the_largest_accepted_input_goes_submit_edit_approve_execute(
        api: Api, target: tuple[LocalServer, Target]) -> None:
    server, sink = target
    body = _largest_request(server.url)
    request = DecisionRequest.model_validate(body)
    edit = _largest_edit(server.url)
    decision_id = request.decision_id

    created = await api.http.post("/api/decisions", json=body)
    assert created.status_code == 201, created.text[:500]
    await _waiting(api, decision_id)
    answered = await edit_and_approve(api, decision_id, edit)
    assert answered.status_code == 200, answered.text[:500]
    assert answered.json()["accepted"] is True

    state = await api.hitl.wait(decision_id, timeout=60)
    assert state.status is DecisionStatus.EXECUTED
    assert state.final_output == edit["output"]
    assert [d.output for d in state.deliveries] == [edit["output"]]
    assert state.attempts[0].output == body["output"]
    # The state keeps the start of an accepted reason (hitl.approvals.KEPT_TEXT); the
    # store keeps it whole.
    [kept] = state.reviews
    assert edit["reason"].startswith(kept.reason.rstrip("…")) and kept.edited
    with Session(api.engine) as session:
        [row] = session.exec(select(ReviewRow).where(ReviewRow.decision_id == decision_id))
        assert row.reason == edit["reason"] and row.edited
    assert sum(sink.counts.values()) == 1  # the action ran once, with the edited params

    history = await _history(api, decision_id)
    assert _failed_tasks(history) == []
    assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    with Session(api.engine) as session:
        record = session.get(DecisionRecord, decision_id)
        assert record is not None and record.status == DecisionStatus.EXECUTED.value

    # The budget, measured on what ran (hitl.limits): every payload well under 2 MiB.
    approval = ApproveInput(reviewer=REVIEWER, **edit)
    record_input = RecordDecisionInput(request=request, state=state)
    sizes = {"request": stored_size(request), "edit": stored_size(approval),
             "state": stored_size(state), "record_decision": stored_size(record_input),
             "largest event": max(event.ByteSize() for event in history.events)}
    print(f"largest accepted input, bytes: {sizes}")
    assert sizes["state"] < 512 * 1024  # under Temporal's warning, let alone its limit
    assert max(sizes.values()) < BLOB_LIMIT
    assert DecisionState.model_validate_json(state.model_dump_json()) == state


# ------------------------------------------------------------- one byte over

@pytest.mark.parametrize("field", ["output", "params", "context"])
async def test_one_byte_over_a_request_limit_is_a_422_naming_it(
        api: Api, target: tuple[LocalServer, Target], field: str) -> None:
    body = _largest_request(target[0].url)
    if field == "output":
        body["output"] += "x"
        loc: tuple[str, ...] = ("output",)
    elif field == "params":
        body["action"]["params"]["blob"] += "x"
        loc = ("action", "params")
    else:
        body["context"]["ticket"] += "x"
        loc = ("context",)
    response = await api.http.post("/api/decisions", json=body)
    _names(response, *loc)
    assert "bytes" in response.json()["detail"][0]["msg"]
    await _never_started(api, body["decision_id"])


async def test_a_body_over_the_limit_is_a_413_before_parsing(api: Api) -> None:
    decision_id = f"huge-{uuid.uuid4().hex[:8]}"
    padding = " " * MAX_BODY_BYTES  # valid JSON once parsed: only its size is wrong
    content = f'{{"decision_id": "{decision_id}"{padding}}}'.encode()
    response = await api.http.post("/api/decisions", content=content,
                                   headers={"Content-Type": "application/json"})
    assert response.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(MAX_BODY_BYTES // 65536 + 1):
            yield b" " * 65536
    streamed = await api.http.post("/api/decisions", content=chunks(),
                                   headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert streamed.json() == {"detail": f"the request body is over {MAX_BODY_BYTES} bytes"}
    await _never_started(api, decision_id)


@pytest.mark.parametrize("field", ["output", "reason", "params", "body"])
async def test_one_byte_over_an_edit_limit_changes_nothing(
        api: Api, target: tuple[LocalServer, Target], field: str) -> None:
    body = _largest_request(target[0].url)
    created = await api.http.post("/api/decisions", json=body)
    assert created.status_code == 201, created.text[:500]
    decision_id = body["decision_id"]
    await _waiting(api, decision_id)

    edit = _largest_edit(target[0].url)
    if field == "body":
        edit["padding"] = "x" * MAX_BODY_BYTES
        answered = await edit_and_approve(api, decision_id, edit)
        assert answered.status_code == 413
    else:
        if field == "params":
            edit["action"]["params"]["blob"] += "x"
        else:
            edit[field] += "x"
        answered = await edit_and_approve(api, decision_id, edit)
        _names(answered, *{"params": ("action", "params")}.get(field, (field,)))

    state = await api.hitl.status(decision_id)
    assert state.status is DecisionStatus.PENDING_REVIEW and state.reviews == []
    reached = {event.event_type for event in (await _history(api, decision_id)).events}
    assert not reached & REVIEW_EVENTS  # nothing was sent to the decision


# ------------------------------------------------- numbers JSON cannot store

@pytest.mark.parametrize(("where", "loc"), [
    ('"confidence": NaN', ("confidence",)),
    ('"params": {"post_id": "p-1", "limit": [1, Infinity]}', ("action", "params", "limit")),
    ('"context": {"score": -Infinity}', ("context", "score")),
])
async def test_nan_and_infinity_are_a_422_naming_the_field(
        api: Api, where: str, loc: tuple[str, ...]) -> None:
    decision_id = f"nan-{uuid.uuid4().hex[:8]}"
    fields = {"confidence": '"confidence": 0.9', "params": '"params": {"post_id": "p-1"}',
              "context": '"context": {}'}
    key = where.split('"')[1]
    fields[key] = where
    content = (f'{{"decision_id": "{decision_id}", "task_type": "content_moderation", '
               f'"action": {{"type": "remove_post", {fields["params"]}}}, "output": "x", '
               f'{fields["confidence"]}, {fields["context"]}}}')
    response = await api.http.post("/api/decisions", content=content,
                                   headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert ["body", *loc] in [error["loc"] for error in response.json()["detail"]]
    await _never_started(api, decision_id)


@pytest.mark.parametrize(("query", "status"), [
    ({"offset": str(MAX_OFFSET)}, 200), ({"offset": str(MAX_OFFSET + 1)}, 422),
    ({"offset": "100000000000000000000"}, 422), ({"offset": "1e20"}, 422),
    ({"limit": "201"}, 422), ({"limit": "0"}, 422), ({"offset": "-1"}, 422),
])
async def test_paging_parameters_are_bounded(api: Api, query: dict[str, str],
                                             status: int) -> None:
    response = await api.http.get("/api/queue", params=query, headers=api.auth(REVIEWER))
    assert response.status_code == status, response.text
