"""The review page shows what is up for approval now, in headless Debian Chromium.

Before: the page showed the request as submitted whatever happened since, so a
reviewer could approve an edit (or a regenerated output) they were never shown.
Now the page shows a pending edit as a diff against the model's proposal, its
approve names that content, and when the content changes while the page is open the
approval is refused (409) and the page reloads the decision instead of approving it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from hitl.api import create_app
from hitl.api.server import serving
from hitl.content import content_sha256
from hitl.enums import DecisionStatus
from hitl.request import DecisionRequest
from tests.api.conftest import until
from tests.conftest import WorkerFactory, register_reviewers
from tests.factories import make_request
from tests.reviewing import token_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="no /usr/bin/chromium (apt-get install -y chromium)"),
]


def _critical(task: str, amount: int) -> DecisionRequest:
    return make_request(task_type=task, confidence=0.5, output=f"Refund ${amount:,}",
                        action={"type": "refund", "params": {"amount": amount},
                                "reversible": False},
                        context={"amount": amount, "requested_by": "svc-billing"})


async def _edit(http: httpx.AsyncClient, request: DecisionRequest, editor: str,
                amount: int) -> None:
    response = await http.post(
        f"/api/decisions/{request.decision_id}/edit",
        headers={"Authorization": f"Bearer {token_for(editor)}"},
        json={"content_sha256": content_sha256(request.output, request.action),
              "action": {"type": "refund", "params": {"amount": amount},
                         "reversible": False}})
    assert response.status_code == 200 and "1 of 2" in response.json()["message"], response.text


async def test_the_page_shows_an_edit_and_never_approves_content_it_did_not_show(
        hitl_worker: WorkerFactory, sqlite_engine: Engine) -> None:
    from playwright.async_api import async_playwright, expect

    register_reviewers(sqlite_engine, ("ann", "ben", "dave"))
    task = f"page_{uuid.uuid4().hex[:6]}"
    edited, changing = _critical(task, 20_000), _critical(task, 30_000)
    async with hitl_worker() as hitl:
        app = create_app(hitl=hitl, engine=sqlite_engine)
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
            for request in (edited, changing):
                await http.post("/api/decisions", json=request.model_dump(mode="json"))
                await until(lambda r=request: _waiting(hitl, r.decision_id))  # type: ignore[misc]
            await _edit(http, edited, "dave", 12_500)

            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page(viewport={"width": 1440, "height": 960})
                    errors: list[str] = []
                    page.on("pageerror", lambda exc: errors.append(str(exc)))
                    await page.goto(url)
                    await page.fill("#token", token_for("ann"))
                    await page.press("#token", "Enter")
                    await expect(page.locator("#who")).to_contain_text("ann")
                    await page.fill("#f-task", task)
                    await page.press("#f-task", "Enter")
                    await page.keyboard.press("Escape")
                    await expect(page.locator("#queue > li")).to_have_count(2, timeout=15_000)
                    title = page.locator(".d-title h2")
                    if await title.text_content() != edited.decision_id:
                        await page.keyboard.press("j")
                    await expect(title).to_have_text(edited.decision_id)
                    # The edit is shown as what is up, with its diff against the proposal.
                    await expect(page.locator(".edit-note")).to_contain_text("edited by dave")
                    await expect(page.locator(".diff .del")).to_contain_text("20000")
                    await expect(page.locator(".diff .add")).to_contain_text("12500")
                    await page.keyboard.press("a")
                    await page.keyboard.press("Enter")
                    await expect(page.locator("#toast")).to_contain_text("approve accepted")

                    # The other decision: open, then edited by someone else while shown.
                    await expect(title).to_have_text(changing.decision_id, timeout=15_000)
                    await expect(page.locator(".edit-note")).to_have_count(0)
                    await _edit(http, changing, "ben", 9_000)
                    await page.keyboard.press("a")
                    await page.keyboard.press("Enter")
                    await expect(page.locator("#toast")).to_contain_text("it changed while "
                                                                         "you looked")
                    await expect(page.locator(".edit-note")).to_contain_text("edited by ben")
                    assert errors == []
                finally:
                    await browser.close()
            done = await hitl.wait(edited.decision_id, timeout=20)
            waiting = await hitl.status(changing.decision_id)
            assert waiting.status is DecisionStatus.PENDING_REVIEW
            assert waiting.approved_by == ["ben"]  # ann's stale approval never counted
            shown = await hitl.content(changing.decision_id)
            await http.post(f"/api/decisions/{changing.decision_id}/reject",
                            headers={"Authorization": f"Bearer {token_for('ann')}"},
                            json={"content_sha256": shown.sha256})
    assert done.status is DecisionStatus.EXECUTED and done.approved_by == ["dave", "ann"]
    assert done.deliveries[0].output == edited.output


async def _waiting(hitl: object, decision_id: str) -> bool:
    from hitl.client import HitlClient

    assert isinstance(hitl, HitlClient)
    return (await hitl.status(decision_id)).status is DecisionStatus.PENDING_REVIEW
