"""The HTTP API against the real dev server, a real worker and a real store.

The main path (submit, queue, verdicts, the stored review, authorization) runs on
SQLite and PostgreSQL (``api_any_store``); the rest stays on SQLite, where the store
plays no different part.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client

from hitl.api import create_app
from hitl.client import HitlClient
from hitl.content import content_sha256
from hitl.enums import DecisionStatus
from hitl.request import DecisionRequest
from hitl.store import ReviewRow
from tests.api.conftest import Api, reviewer_tokens, until
from tests.conftest import WorkerFactory
from tests.factories import make_request
from tests.http_servers import LocalServer, Target

pytestmark = pytest.mark.timeout(60)


def _reviews(engine: Engine, decision_id: str) -> list[ReviewRow]:
    """The stored reviews of a decision in the order they reached the workflow (they
    are written in the background, so the insert order may differ)."""
    with Session(engine) as session:
        return list(session.exec(select(ReviewRow).where(
            ReviewRow.decision_id == decision_id).order_by(
                col(ReviewRow.reviewed_at), col(ReviewRow.id))).all())


def _stored(engine: Engine, decision_id: str) -> list[tuple[str, str, bool]]:
    return [(r.reviewer, r.verdict, r.accepted) for r in _reviews(engine, decision_id)]


async def _queued(api: Api, task_type: str) -> list[str]:
    response = await api.http.get("/api/queue", params={"task_type": task_type},
                                  headers=api.auth("ann"))
    assert response.status_code == 200, response.text
    return [item["decision_id"] for item in response.json()["items"]]


def _critical(**overrides: Any) -> DecisionRequest:
    return make_request(task_type="account_deletion", confidence=0.99, action={
        "type": "delete_account", "params": {"account_id": "a1"}, "reversible": False},
        **overrides)


# ------------------------------------------------------------ schema, health

async def test_openapi_schema_and_health(api: Api) -> None:
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    schema = (await api.http.get("/openapi.json")).json()
    paths = schema["paths"]
    for path, method in [("/api/decisions", "post"), ("/api/decisions/{decision_id}", "get"),
                         ("/api/queue", "get"), ("/api/decisions/{decision_id}/approve", "post"),
                         ("/api/decisions/{decision_id}/reject", "post"),
                         ("/api/decisions/{decision_id}/edit", "post"),
                         ("/api/decisions/{decision_id}/flag", "post"), ("/healthz", "get")]:
        assert method in paths[path], (path, method)
    components = schema["components"]["schemas"]
    assert {"confidence", "decision_id", "action"} <= set(components["DecisionRequest"]
                                                          ["properties"])
    for body in ("ApproveBody", "RejectBody", "EditBody", "FlagBody"):
        assert "reviewer" not in components[body]["properties"]  # the token names the reviewer
    assert "error_category" in components["RejectBody"]["properties"]
    approve = paths["/api/decisions/{decision_id}/approve"]["post"]
    assert {"401", "403", "404", "409"} <= set(approve["responses"])
    assert {"HTTPBearer", "APIKeyCookie"} <= set(schema["components"]["securitySchemes"])
    queue_params = {p["name"] for p in paths["/api/queue"]["get"]["parameters"]}
    assert {"zone", "risk", "task_type", "overdue", "limit", "offset"} <= queue_params


# ------------------------------------------------------------- the main path

async def test_submit_queue_approve_state_on_each_store(api_any_store: Api) -> None:
    """The worker writes the queue row and the review; the app reads both from the
    same store: on PostgreSQL as on SQLite."""
    api = api_any_store
    task = f"main-{uuid.uuid4().hex[:8]}"  # its own task type: other tests' decisions stay out
    request = make_request(task_type=task, confidence=0.3, action={"reversible": False})
    created = await api.http.post("/api/decisions", json=request.model_dump(mode="json"))
    assert created.status_code == 201, created.text

    async def queued() -> bool:
        return await _queued(api, task) == [request.decision_id]

    await until(queued)
    [item] = (await api.http.get("/api/queue", params={"task_type": task},
                                 headers=api.auth("ann"))).json()["items"]
    assert (item["status"], item["zone"], item["confidence"]) == ("pending_review", "queue", 0.3)

    approve = await api.http.post(f"/api/decisions/{request.decision_id}/approve",
                                  json={**await api.named(request.decision_id),
                                        "reason": "checked the ticket"}, headers=api.auth("ann"))
    assert approve.status_code == 200 and approve.json()["accepted"] is True
    await api.hitl.wait(request.decision_id, timeout=20)
    state = (await api.http.get(f"/api/decisions/{request.decision_id}")).json()
    assert (state["status"], state["approved_by"]) == ("executed", ["ann"])
    assert [(r["reviewer"], r["reason"]) for r in state["reviews"]] == [
        ("ann", "checked the ticket")]

    async def left_queue() -> bool:
        return await _queued(api, task) == []

    await until(left_queue)
    [row] = _reviews(api.engine, request.decision_id)
    assert (row.reviewer, row.verdict, row.accepted, row.reason, row.task_type) == (
        "ann", "approve", True, "checked the ticket", task)


# ---------------------------------------------------------------- submitting

async def test_submit_is_idempotent_and_names_bad_fields(api: Api) -> None:
    request = make_request(confidence=0.3)
    body = request.model_dump(mode="json")
    first = await api.http.post("/api/decisions", json=body)
    assert first.status_code == 201 and first.json()["attached"] is False
    assert first.headers["location"] == f"/api/decisions/{request.decision_id}"
    again = await api.http.post("/api/decisions", json=body)
    assert again.status_code == 200 and again.json()["attached"] is True
    conflict = await api.http.post("/api/decisions", json={**body, "confidence": 0.31})
    assert conflict.status_code == 409 and "different payload" in conflict.json()["detail"]
    bad = await api.http.post("/api/decisions", json={**body, "confidence": 1.5})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "confidence"]
    extra = await api.http.post("/api/decisions", json={**body, "decision_id": "x2", "oops": 1})
    assert extra.status_code == 422 and extra.json()["detail"][0]["loc"] == ["body", "oops"]

    state = await api.http.get(f"/api/decisions/{request.decision_id}")
    assert state.status_code == 200 and state.json()["decision_id"] == request.decision_id
    missing = await api.http.get(f"/api/decisions/missing-{uuid.uuid4().hex}")
    assert missing.status_code == 404
    await api.http.post(f"/api/decisions/{request.decision_id}/reject",
                        json={**await api.named(request.decision_id),
                              "reason": "cleanup"}, headers=api.auth("ann"))


# ------------------------------------------------------------ authentication

async def test_reviewer_actions_need_a_valid_token(api: Api) -> None:
    request = make_request(confidence=0.3)
    await api.waiting(request)
    url = f"/api/decisions/{request.decision_id}/approve"
    for headers in ({}, {"Authorization": "Bearer hitl_not-a-token"},
                    {"Authorization": f"Basic {api.tokens['ann']}"}):
        response = await api.http.post(url, json={}, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
    assert (await api.http.get("/api/queue")).status_code == 401
    assert (await api.http.get(f"/api/decisions/{request.decision_id}/review")
            ).status_code == 401
    # The reviewer is whoever holds the token: a body naming someone is refused outright.
    named = await api.named(request.decision_id)
    spoof = await api.http.post(url, json={**named, "reviewer": "ben"}, headers=api.auth("ann"))
    assert spoof.status_code == 422 and spoof.json()["detail"][0]["loc"] == ["body", "reviewer"]
    state = await api.hitl.status(request.decision_id)
    assert state.reviews == [] and state.status is DecisionStatus.PENDING_REVIEW

    ack = await api.http.post(url, json={**named, "reason": "looks right",
                                         "time_on_page_seconds": 4.2,
                                         "request_id": "r-1"}, headers=api.auth("ann"))
    assert ack.status_code == 200 and ack.json()["accepted"] is True
    final = await api.hitl.wait(request.decision_id, timeout=20)
    assert final.status is DecisionStatus.EXECUTED
    review = final.reviews[0]
    assert (review.reviewer, review.reason, review.time_on_page_seconds) == (
        "ann", "looks right", 4.2)
    assert review.request_id == "ann:r-1"  # scoped to the reviewer

    late = await api.http.post(f"/api/decisions/{request.decision_id}/reject",
                               json={**await api.named(request.decision_id),
                                     "reason": "too late"}, headers=api.auth("ben"))
    assert late.status_code == 409
    gone = await api.http.post(f"/api/decisions/missing-{uuid.uuid4().hex}/approve",
                               json={"content_sha256": "0" * 64},
                               headers=api.auth("ann"))
    assert gone.status_code == 404


# ------------------------------------------------------------- authorization

async def test_self_approval_and_wrong_role_are_403(api_any_store: Api) -> None:
    api = api_any_store  # the worker authorizes from this store's registry
    own = make_request(confidence=0.3, context={"requested_by": "ann"})
    high = make_request(task_type="price_adjustment", confidence=0.5, action={
        "type": "adjust_price", "params": {"sku": "s", "new_price": 2}, "reversible": False})
    await api.waiting(own)
    await api.waiting(high)

    refused = await api.http.post(f"/api/decisions/{own.decision_id}/approve",
                                  json=await api.named(own.decision_id), headers=api.auth("ann"))
    assert refused.status_code == 403 and "cannot approve" in refused.json()["detail"]
    junior = await api.http.post(f"/api/decisions/{high.decision_id}/approve",
                                 json=await api.named(high.decision_id), headers=api.auth("june"))
    assert junior.status_code == 403 and "may not decide high-risk" in junior.json()["detail"]
    for request in (own, high):
        state = await api.hitl.status(request.decision_id)
        assert state.status is DecisionStatus.PENDING_REVIEW
        assert [r.accepted for r in state.reviews] == [False]

    # A requester may still reject their own decision; a senior decides the high one.
    ok = await api.http.post(f"/api/decisions/{own.decision_id}/reject",
                             json={**await api.named(own.decision_id),
                                   "reason": "withdrawn"}, headers=api.auth("ann"))
    assert ok.status_code == 200
    ok = await api.http.post(f"/api/decisions/{high.decision_id}/approve",
                             json=await api.named(high.decision_id), headers=api.auth("ben"))
    assert ok.status_code == 200
    assert (await api.hitl.wait(high.decision_id, timeout=20)).approved_by == ["ben"]
    assert (await api.hitl.wait(own.decision_id, timeout=20)).status is DecisionStatus.REJECTED
    # The refusals are kept in the store as well as the verdicts.
    assert _stored(api.engine, own.decision_id) == [("ann", "approve", False),
                                                    ("ann", "reject", True)]
    assert _stored(api.engine, high.decision_id) == [("june", "approve", False),
                                                     ("ben", "approve", True)]


async def test_four_eyes_same_reviewer_twice_is_403_then_second_executes(
        api_any_store: Api) -> None:
    api = api_any_store
    request = _critical()
    await api.waiting(request)
    url = f"/api/decisions/{request.decision_id}/approve"
    named = await api.named(request.decision_id)
    first = await api.http.post(url, json=named, headers=api.auth("ann"))
    assert first.status_code == 200 and "1 of 2" in first.json()["message"]
    twice = await api.http.post(url, json=named, headers=api.auth("ann"))
    assert twice.status_code == 403 and "2 distinct approvers" in twice.json()["detail"]
    assert (await api.hitl.status(request.decision_id)).status is DecisionStatus.PENDING_REVIEW
    second = await api.http.post(url, json=named, headers=api.auth("ben"))
    assert second.status_code == 200 and second.json()["message"] == "approve accepted"
    final = await api.hitl.wait(request.decision_id, timeout=20)
    assert final.status is DecisionStatus.EXECUTED and final.approved_by == ["ann", "ben"]
    assert (await api.http.post(url, json=named, headers=api.auth("june"))).status_code == 409
    assert _stored(api.engine, request.decision_id) == [
        ("ann", "approve", True), ("ann", "approve", False), ("ben", "approve", True)]


async def test_decided_but_still_running_is_409_not_403(
        api: Api, target_server: tuple[LocalServer, Target]) -> None:
    server, target = target_server
    target.status = 503  # the approved action keeps retrying: the workflow stays open
    request = make_request(confidence=0.3, action={"target_url": f"{server.url}/act",
                                                   "reversible": False})
    await api.waiting(request)
    url = f"/api/decisions/{request.decision_id}/approve"
    named = await api.named(request.decision_id)
    assert (await api.http.post(url, json=named, headers=api.auth("ann"))).status_code == 200
    late = await api.http.post(url, json=named, headers=api.auth("ben"))
    assert late.status_code == 409 and "already decided" in late.json()["detail"]
    target.status = 200
    final = await api.hitl.wait(request.decision_id, timeout=20)
    assert final.status is DecisionStatus.EXECUTED and final.approved_by == ["ann"]


async def test_concurrent_verdicts_one_wins_the_other_is_409(api: Api) -> None:
    request = make_request(confidence=0.3, action={"reversible": False})
    await api.waiting(request)
    named = await api.named(request.decision_id)
    responses = await asyncio.gather(*(
        api.http.post(f"/api/decisions/{request.decision_id}/{verb}", json=named,
                      headers=api.auth(name)) for verb, name in (("approve", "ann"),
                                                                  ("reject", "ben"))))
    assert sorted(r.status_code for r in responses) == [200, 409]
    final = await api.hitl.wait(request.decision_id, timeout=20)
    assert final.status in (DecisionStatus.EXECUTED, DecisionStatus.REJECTED)


async def test_verdict_taken_while_authorizing_is_409(
        hitl_worker: WorkerFactory, client: Client, task_queue: str,
        sqlite_engine: Engine) -> None:
    """Both reviews reach the workflow before routing, so both pass the update
    validator; the second is refused by the handler because the first took the
    verdict meanwhile: still "already decided", so 409, not 403."""
    tokens = reviewer_tokens(sqlite_engine)
    app = create_app(hitl=HitlClient(client, task_queue=task_queue), engine=sqlite_engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://hitl.test") as http:
        request = make_request(confidence=0.3, action={"reversible": False})
        created = await http.post("/api/decisions", json=request.model_dump(mode="json"))
        assert created.status_code == 201
        reviews = [asyncio.create_task(http.post(
            f"/api/decisions/{request.decision_id}/{verb}",
            json={"content_sha256": content_sha256(request.output, request.action)},
            headers={"Authorization": f"Bearer {tokens[name]}"}))
            for verb, name in (("approve", "ann"), ("reject", "ben"))]
        await asyncio.sleep(0.5)  # both updates wait at the server for a worker
        async with hitl_worker() as hitl:
            responses = await asyncio.gather(*reviews)
            final = await hitl.wait(request.decision_id, timeout=20)
    assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
    assert [r.accepted for r in final.reviews] == [True, False]


# ------------------------------------------------------------- the actions

async def test_edit_flag_and_reject_carry_their_fields(api_any_store: Api) -> None:
    api = api_any_store
    edited, flagged, rejected = (make_request(confidence=0.3, action={"reversible": False})
                                 for _ in range(3))
    for request in (edited, flagged, rejected):
        await api.waiting(request)
    nothing = await api.http.post(f"/api/decisions/{edited.decision_id}/edit",
                                  json={**await api.named(edited.decision_id),
                                        "reason": "no change"}, headers=api.auth("ann"))
    assert nothing.status_code == 422
    edit = await api.http.post(f"/api/decisions/{edited.decision_id}/edit", headers=api.auth("ann"),
                               json={**await api.named(edited.decision_id),
                                     "output": "technical", "action": {
                                   "type": "set_label", "params": {"label": "technical"}}})
    assert edit.status_code == 200
    flag = await api.http.post(f"/api/decisions/{flagged.decision_id}/flag",
                               json={**await api.named(flagged.decision_id),
                                     "reason": "borderline"}, headers=api.auth("ann"))
    assert flag.status_code == 200
    reject = await api.http.post(f"/api/decisions/{rejected.decision_id}/reject",
                                 headers=api.auth("ben"), json={
                                     **await api.named(rejected.decision_id),
                                     "reason": "wrong queue", "correct_answer": "technical",
                                     "error_category": "wrong_label"})
    assert reject.status_code == 200
    bad = await api.http.post(f"/api/decisions/{rejected.decision_id}/reject",
                              json={**await api.named(rejected.decision_id),
                                    "error_category": "vibes"}, headers=api.auth("ben"))
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == [
        "body", "error_category"]

    edited_state = await api.hitl.wait(edited.decision_id, timeout=20)
    assert edited_state.final_output == "technical" and edited_state.reviews[0].edited
    flagged_state = await api.hitl.wait(flagged.decision_id, timeout=20)
    assert flagged_state.flagged_for_monitoring and flagged_state.status is DecisionStatus.EXECUTED
    assert (await api.hitl.wait(rejected.decision_id, timeout=20)).status is (
        DecisionStatus.REJECTED)
    [row] = _reviews(api.engine, rejected.decision_id)
    assert (row.reviewer, row.correct_answer, row.error_category, row.reason) == (
        "ben", "technical", "wrong_label", "wrong queue")
    [edit_row] = _reviews(api.engine, edited.decision_id)
    [flag_row] = _reviews(api.engine, flagged.decision_id)
    assert (edit_row.edited, flag_row.flag_for_monitoring, flag_row.reason) == (
        True, True, "borderline")


# ----------------------------------------------------------------- the page's data

async def test_review_view_has_request_and_similar_verdicts(api: Api) -> None:
    task = f"review-view-{uuid.uuid4().hex[:8]}"
    past = [make_request(task_type=task, confidence=c, output=o) for c, o in
            ((0.41, "refund the customer in full"), (0.52, "escalate to billing"),
             (0.49, "refund the customer partially"))]
    for request, verdict in zip(past, ("reject", "approve", "approve"), strict=True):
        await api.waiting(request)
        body = ({"reason": "policy says partial", "correct_answer": "partial refund",
                 "error_category": "wrong_amount"} if verdict == "reject" else {})
        body |= await api.named(request.decision_id)
        response = await api.http.post(f"/api/decisions/{request.decision_id}/{verdict}",
                                       json=body, headers=api.auth("ann"))
        assert response.status_code == 200
        await api.hitl.wait(request.decision_id, timeout=20)

    current = make_request(task_type=task, confidence=0.42, output="refund the customer in full",
                           candidates=[{"outcome": "refund", "score": 0.42},
                                       {"outcome": "deny", "score": 0.31}])
    await api.waiting(current)
    view = await api.http.get(f"/api/decisions/{current.decision_id}/review",
                              headers=api.auth("ben"))
    assert view.status_code == 200
    data = view.json()
    assert data["request"]["output"] == "refund the customer in full"
    assert [c["outcome"] for c in data["request"]["candidates"]] == ["refund", "deny"]
    assert data["state"]["routing"]["reasons"][0].startswith("confidence 0.420 < 0.85")
    similar = data["similar"]
    assert [s["decision_id"] for s in similar] == [p.decision_id for p in (past[0], past[2],
                                                                            past[1])]
    assert (similar[0]["verdict"], similar[0]["correct_answer"], similar[0]["similarity"]) == (
        "reject", "partial refund", 1.0)
    assert similar[0]["error_category"] == "wrong_amount" and similar[0]["reviewers"] == ["ann"]
    assert (await api.http.get(f"/api/decisions/missing-{uuid.uuid4().hex}/review",
                               headers=api.auth("ben"))).status_code == 404
    await api.http.post(f"/api/decisions/{current.decision_id}/reject",
                        json=await api.named(current.decision_id), headers=api.auth("ben"))


# ------------------------------------------------------------- browser session

async def test_session_cookie_and_csrf(api: Api) -> None:
    request = make_request(confidence=0.3)
    await api.waiting(request)
    url = f"/api/decisions/{request.decision_id}/approve"
    assert (await api.http.post("/api/session", json={"token": "hitl_nope"})).status_code == 401
    cross = await api.http.post("/api/session", json={"token": api.tokens["ann"]},
                                headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and "hitl_session" not in api.http.cookies

    login = await api.http.post("/api/session", json={"token": api.tokens["ann"]})
    assert login.status_code == 200
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    csrf = login.json()["csrf_token"]
    assert login.json()["reviewer"] == "ann"
    assert (await api.http.get("/api/session")).json()["csrf_token"] == csrf
    assert (await api.http.get("/api/queue")).status_code == 200  # reads need no CSRF token

    named = await api.named(request.decision_id)
    no_csrf = await api.http.post(url, json=named)
    assert no_csrf.status_code == 403 and "X-CSRF-Token" in no_csrf.json()["detail"]
    wrong = await api.http.post(url, json=named, headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    assert (await api.hitl.status(request.decision_id)).reviews == []
    ok = await api.http.post(url, json={**named, "time_on_page_seconds": 3},
                             headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200
    assert (await api.hitl.wait(request.decision_id, timeout=20)).reviews[0].reviewer == "ann"

    assert (await api.http.delete("/api/session")).status_code == 403  # sign-out needs it too
    assert (await api.http.delete("/api/session", headers={"X-CSRF-Token": csrf})
            ).status_code == 204
    api.http.cookies.clear()
    assert (await api.http.get("/api/session")).status_code == 401


async def test_page_is_served_with_a_strict_policy(api: Api) -> None:
    page = await api.http.get("/")
    assert page.status_code == 200 and 'src="/static/app.js"' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert 'src="http' not in page.text and 'href="http' not in page.text  # nothing external
    script = await api.http.get("/static/app.js")
    assert script.status_code == 200 and "innerHTML" not in script.text
    assert "fetch(\"http" not in script.text


async def test_state_of_a_decision_no_worker_answers_for_is_503(
        client: Client, sqlite_engine: Engine) -> None:
    # Submitted to a task queue no worker polls: its state query cannot be answered.
    hitl = HitlClient(client, task_queue=f"nobody-{uuid.uuid4().hex[:8]}",
                      query_timeout=timedelta(seconds=2))
    request = make_request()
    await hitl.submit(request)
    app = create_app(hitl=hitl, engine=sqlite_engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://hitl.test", timeout=30) as http:
        answer = await http.get(f"/api/decisions/{request.decision_id}")
    await client.get_workflow_handle(request.decision_id).terminate("test over")
    assert answer.status_code == 503, answer.text
    assert "is a worker running" in answer.json()["detail"]
