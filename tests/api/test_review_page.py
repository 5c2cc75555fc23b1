"""The review page in headless Debian Chromium, against a real uvicorn and a real worker.

A reviewer signs in with a token, filters the queue, approves one decision and
rejects another with a reason, all with the keyboard; the outcomes are checked
through the workflow state. The decision view's screenshot goes to the test's
temporary directory, or to docs/review-page.png with HITL_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from hitl.api import create_app
from hitl.api.server import serving
from hitl.content import content_sha256
from hitl.enums import DecisionStatus, ErrorCategory
from hitl.request import DecisionRequest
from tests.api.conftest import reviewer_tokens, until
from tests.conftest import WorkerFactory, test_policy
from tests.factories import make_request
from tests.http_servers import Judge, LocalServer

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "review-page.png"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
TASK = "refund_request"

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="no /usr/bin/chromium (apt-get install -y chromium)"),
]


def _refund(amount: float, confidence: float, output: str, *, reversible: bool = False,
            new_user: bool = False, **context: Any) -> DecisionRequest:
    deny = round((1 - confidence) * 0.7, 2)
    return make_request(
        task_type=TASK, confidence=confidence, output=output, outcome="refund",
        action={"type": "refund", "params": {"amount": amount, "currency": "USD"},
                "reversible": reversible},
        candidates=[{"outcome": "refund", "score": confidence},
                    {"outcome": "partial_refund", "score": round(1 - confidence - deny, 2)},
                    {"outcome": "deny", "score": deny}],
        context={"amount": amount, "is_new_user": new_user, "requested_by": "svc-billing",
                 **context})


async def _decide(http: httpx.AsyncClient, token: str, request: DecisionRequest, verb: str,
                  body: dict[str, Any], hitl: Any) -> None:
    await http.post("/api/decisions", json=request.model_dump(mode="json"))
    await until(lambda: _waiting(hitl, request.decision_id))
    response = await http.post(f"/api/decisions/{request.decision_id}/{verb}", headers={
        "Authorization": f"Bearer {token}"}, json={
        **body, "content_sha256": content_sha256(request.output, request.action)})
    assert response.status_code == 200, response.text


async def _waiting(hitl: Any, decision_id: str) -> bool:
    return bool((await hitl.status(decision_id)).status is DecisionStatus.PENDING_REVIEW)


async def test_review_with_the_keyboard_in_chromium(
        hitl_worker: WorkerFactory, sqlite_engine: Engine,
        judge_server: tuple[LocalServer, Judge], tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    judge_url, judge = judge_server[0].url, judge_server[1]
    tokens = reviewer_tokens(sqlite_engine)
    # Escalated decisions get a 1 s SLA here, so the queue shows overdue and provisional ones.
    async with hitl_worker(policy=test_policy(sla={"escalate": 1.0}),
                           judge_url=judge_url) as hitl:
        app = create_app(hitl=hitl, engine=sqlite_engine)
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
            # Past decisions with human verdicts: what "similar decisions" draws on.
            for request, verb, body in (
                (_refund(11_500, 0.58, "Refund $11,500 to the customer for order o-4127"),
                 "reject", {"reason": "only the damaged item qualifies",
                            "correct_answer": "Partial refund $2,300",
                            "error_category": "wrong_amount"}),
                (_refund(9_800, 0.61, "Refund $9,800 to the customer for order o-4410"),
                 "approve", {"reason": "carrier confirmed the loss"}),
                (_refund(45, 0.52, "Refund $45 shipping fee to the customer"), "approve", {}),
            ):
                await _decide(http, tokens["ben"], request, verb, body, hitl)
                await hitl.wait(request.decision_id, timeout=20)

            judge.mode = "fail"  # the judge doubts the big one's amount
            big = _refund(12_000, 0.62, "Refund $12,000 to the customer for order o-5512",
                          order_id="o-5512", customer_tier="gold", channel="chat",
                          ticket="Package never arrived; customer asks for a full refund.")
            await _decide(http, tokens["ben"], big, "approve",
                          {"reason": "tracking shows lost"}, hitl)  # four-eyes: 1 of 2
            judge.mode = "pass"
            to_approve = _refund(240, 0.55, "Refund $240 to the customer for order o-5530")
            to_reject = _refund(80, 0.7, "Refund $80 to the customer for order o-5531")
            provisional = _refund(60, 0.5, "Refund $60 store credit for order o-5540",
                                  reversible=True, new_user=True)
            for request in (to_approve, to_reject, provisional):
                await http.post("/api/decisions", json=request.model_dump(mode="json"))
                await until(lambda r=request: _status_in(hitl, r.decision_id))  # type: ignore[misc]
            # The page reloads its queue only every 20 s: open it once the queue it will
            # show has settled (the $60 one delivered provisionally, past its 1 s SLA),
            # or a slow machine shows that one as overdue for the whole check.
            await until(lambda: _queue_settled(http, tokens["ann"], provisional.decision_id),
                        within=30)

            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page(viewport={"width": 1440, "height": 960})
                    errors: list[str] = []
                    page.on("pageerror", lambda exc: errors.append(str(exc)))
                    await page.goto(url)
                    await page.fill("#token", tokens["ann"])
                    await page.press("#token", "Enter")
                    await expect(page.locator("#who")).to_contain_text("ann")
                    await page.fill("#f-task", TASK)
                    await page.press("#f-task", "Enter")
                    await page.keyboard.press("Escape")
                    queue = page.locator("#queue > li")
                    await expect(queue).to_have_count(4, timeout=15_000)
                    await expect(page.locator("#queue > li.overdue")).to_have_count(1)
                    await expect(page.locator("#queue > li.provisional")).to_have_count(1,
                                                                               timeout=15_000)
                    title = page.locator(".d-title h2")
                    await expect(title).to_have_text(big.decision_id)
                    await expect(page.locator(".similar > li")).to_have_count(3)
                    await page.wait_for_timeout(1200)  # let the counters tick once
                    shot = SCREENSHOT if os.environ.get("HITL_UPDATE_SCREENSHOT") else (
                        tmp_path / "review-page.png")
                    await page.screenshot(path=str(shot))

                    # Most urgent first: big (overdue), provisional, then the two batch ones.
                    await page.keyboard.press("j")
                    await page.keyboard.press("j")
                    await expect(title).to_have_text(to_approve.decision_id)
                    start = time.perf_counter()
                    await page.keyboard.press("a")
                    await page.keyboard.press("Enter")
                    await expect(page.locator("#toast")).to_contain_text("approve accepted")
                    approve_seconds = time.perf_counter() - start

                    await expect(title).to_have_text(to_reject.decision_id)
                    start = time.perf_counter()
                    await page.keyboard.press("r")
                    await page.keyboard.press("2")  # wrong_label
                    await page.fill("#p-reason", "customer already refunded by the carrier")
                    await page.press("#p-reason", "Enter")
                    await expect(page.locator("#toast")).to_contain_text("reject accepted")
                    reject_seconds = time.perf_counter() - start
                    assert errors == []
                finally:
                    await browser.close()

            approved = await hitl.wait(to_approve.decision_id, timeout=20)
            rejected = await hitl.wait(to_reject.decision_id, timeout=20)
            print(f"\nbrowser review: approve {approve_seconds:.2f}s, "
                  f"reject {reject_seconds:.2f}s (keystroke to workflow ack); "
                  f"time on page sent: {approved.reviews[0].time_on_page_seconds}s, "
                  f"{rejected.reviews[0].time_on_page_seconds}s; screenshot {shot}")
            for request in (big, provisional):  # leave nothing waiting in the shared server
                await http.post(f"/api/decisions/{request.decision_id}/reject", json={
                    "content_sha256": content_sha256(request.output, request.action)},
                                headers={"Authorization": f"Bearer {tokens['ann']}"})
                await hitl.wait(request.decision_id, timeout=20)

    assert approved.status is DecisionStatus.EXECUTED and approved.approved_by == ["ann"]
    assert rejected.status is DecisionStatus.REJECTED
    review = rejected.reviews[0]
    assert (review.reviewer, review.error_category, review.reason) == (
        "ann", ErrorCategory.WRONG_LABEL, "customer already refunded by the carrier")
    for state in (approved, rejected):
        seconds = state.reviews[0].time_on_page_seconds
        assert seconds is not None and 0 < seconds < 60
    assert approve_seconds < 10 and reject_seconds < 10


async def _status_in(hitl: Any, decision_id: str) -> bool:
    status = (await hitl.status(decision_id)).status
    return bool(status in (DecisionStatus.PENDING_REVIEW, DecisionStatus.PROVISIONAL))


async def _queue_settled(http: httpx.AsyncClient, token: str, provisional_id: str) -> bool:
    response = await http.get("/api/queue", params={"task_type": TASK},
                              headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    items = response.json()["items"]
    statuses = {item["decision_id"]: item["status"] for item in items}
    return (len(items) == 4 and statuses.get(provisional_id) == "provisional"
            and sum(bool(item["overdue"]) for item in items) == 1)
