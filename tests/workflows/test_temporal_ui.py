"""The Temporal UI as the operators' control room, in headless Debian Chromium.

A dev server with its UI and decisions in several zones. The saved views the README
recommends are checked through the visibility API first, then the UI's workflow list,
filtered by ``HitlZone``, is configured the way an operator does it: the "Configure
Columns" drawer adds hitl's search attributes as columns, the UI persists that in
localStorage, and after a reload each row shows the decision's task type, risk, zone,
status, confidence and SLA deadline. The list cannot show the workflow's summary: the
bundled UI (2.54) offers no such column because the list API carries no user metadata,
so the summary is checked on the decision page. The screenshots go to the test's
temporary directory, or to docs/ with HITL_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from hitl import search_attributes as sa
from hitl.client import HitlClient
from hitl.connection import data_converter
from hitl.policy import load_policy
from hitl.review import RejectInput
from hitl.settings import Settings
from tests.conftest import BIN
from tests.factories import make_request
from tests.reviewing import reject
from worker.main import running_worker

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "temporal-ui.png"
DETAIL = SCREENSHOT.with_name("temporal-ui-decision.png")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
# The UI's own names: the persisted-store key and the drawer's button labels.
COLUMNS_KEY = "namespace-workflow-table-columns"
HITL_COLUMNS = ["HitlTaskType", "HitlRisk", "HitlZone", "HitlStatus", "HitlConfidence",
                "HitlSlaDeadline"]
# Every row is a DecisionWorkflow, and the SLA deadline says more than start or end.
DROPPED_COLUMNS = ["Run ID", "Type", "Start", "End"]
VIEWS_KEY, VIEW_NAME = "saved-workflow-queries", "Escalated"
HEADER = "workflows-summary-table-header-cell-"

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="no /usr/bin/chromium (apt-get install -y chromium)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def ui_env() -> AsyncIterator[tuple[WorkflowEnvironment, int]]:
    ui_port = _free_port()
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"), search_attributes=sa.ALL,
        data_converter=data_converter(), ui=True, ui_port=ui_port,
        dev_server_log_level="error")
    yield environment, ui_port
    await environment.shutdown()


async def _settled_view(client: Client, query: str, expected: set[str]) -> set[str]:
    """The IDs a saved-view query lists, once visibility (eventually consistent) agrees."""
    found: set[str] = set()
    for _ in range(60):
        found = {execution.id async for execution in client.list_workflows(query)}
        if found == expected:
            break
        await asyncio.sleep(0.25)
    return found


async def test_ui_lists_decisions_filtered_by_zone(ui_env: tuple[WorkflowEnvironment, int],
                                                   sqlite_engine: Engine,
                                                   tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    environment, ui_port = ui_env
    client, namespace = environment.client, environment.client.namespace
    task_queue = f"ui-{uuid.uuid4().hex[:8]}"
    settings = Settings(task_queue=task_queue, data_dir=tmp_path)
    async with running_worker(client, settings, policy=load_policy(), engine=sqlite_engine):
        hitl = HitlClient(client, task_queue=task_queue)
        refund = make_request(  # critical (amount > 10,000): escalated however confident
            decision_id=f"refund-{uuid.uuid4().hex[:6]}", task_type="refund_request",
            confidence=0.93, output="Refund $12,000 to the customer",
            action={"type": "refund", "params": {"amount": 12000}, "reversible": False},
            context={"amount": 12000, "requested_by": "svc-billing"})
        moderation = make_request(  # high risk, not confident: escalated
            decision_id=f"mod-{uuid.uuid4().hex[:6]}", task_type="content_moderation",
            confidence=0.6, output="remove", outcome="remove",
            candidates=[{"outcome": "remove", "score": 0.6},
                        {"outcome": "approve", "score": 0.4}],
            action={"type": "remove_post", "params": {"post": "p-77"}, "reversible": True},
            context={"requested_by": "svc-trust"})
        automatic, queued = make_request(confidence=0.95), make_request(confidence=0.5)
        for request in (refund, moderation, automatic, queued):
            await hitl.submit(request)

        # The README's saved views, through the same visibility API the UI lists with.
        waiting = {refund.decision_id, moderation.decision_id, queued.decision_id}
        saved_views = {
            'HitlStatus = "pending_review"': waiting,
            'HitlStatus = "pending_review" AND HitlRisk = "critical"': {refund.decision_id},
            'HitlZone = "escalate"': {refund.decision_id, moderation.decision_id},
            'HitlZone = "escalate" AND HitlPriority = 0': set(),  # none overdue yet
            'HitlZone = "auto"': {automatic.decision_id},
        }
        for query, expected in saved_views.items():
            assert await _settled_view(client, query, expected) == expected, query

        url = (f"http://127.0.0.1:{ui_port}/namespaces/{namespace}/workflows?query="
               + urllib.parse.quote('HitlZone = "escalate"'))
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                       args=CHROMIUM_ARGS)
            # The UI shows times in the browser's zone: pin it, so the deadline reads alike.
            page = await browser.new_page(viewport={"width": 1680, "height": 520},
                                          timezone_id="UTC", locale="en-US")
            await page.goto(url)
            rows = page.get_by_test_id("workflows-summary-configurable-table-row")
            await expect(rows.filter(has_text=refund.decision_id)).to_be_visible(timeout=15_000)

            # Save the filter as a named view, then configure the columns, both as an
            # operator would: through the UI's own dialog and drawer.
            await page.get_by_test_id("create-view-button").click()
            dialog = page.locator("#workflow-save-view-modal")
            await dialog.get_by_test_id("workflow-save-view-modal-input").fill(VIEW_NAME)
            await dialog.get_by_role("button", name="Save", exact=True).click()
            await page.get_by_test_id("workflows-summary-table-configuration-button").click()
            drawer = page.locator("#workflows-table-configuration-drawer")
            for label in DROPPED_COLUMNS:
                await drawer.get_by_role("button", name=f"Remove {label} column",
                                         exact=True).click()
            for label in HITL_COLUMNS:
                await drawer.get_by_role("button", name=f"Add {label} column",
                                         exact=True).click()
            await drawer.get_by_role("button", name="Close Workflows Table configuration",
                                     exact=True).click()
            wanted = ["Status", "Workflow ID", *HITL_COLUMNS]
            stored = json.loads(await page.evaluate(f"localStorage.getItem('{COLUMNS_KEY}')"))
            assert [column["label"] for column in stored[namespace]] == wanted
            kept = json.loads(await page.evaluate(f"localStorage.getItem('{VIEWS_KEY}')"))
            assert [(view["name"], view["query"]) for view in kept[namespace]] == [
                (VIEW_NAME, 'HitlZone = "escalate"')]

            # A reload starts from what the browser kept: the columns must survive it.
            await page.reload()
            refund_row = rows.filter(has_text=refund.decision_id)
            await expect(refund_row).to_be_visible(timeout=15_000)
            await expect(refund_row.get_by_text("pending_review")).to_be_visible()
            await expect(page.get_by_text(VIEW_NAME, exact=True).first).to_be_visible()
            headers = [str(await header.get_attribute("data-testid")).removeprefix(HEADER)
                       for header in await page.locator(f'[data-testid^="{HEADER}"]').all()]
            assert headers == wanted

            async def cells(decision_id: str) -> dict[str, str]:
                row = rows.filter(has_text=decision_id)
                texts = await row.get_by_test_id(
                    "workflows-summary-table-body-cell").all_inner_texts()
                return dict(zip(headers, (text.strip() for text in texts), strict=True))

            shown = await cells(refund.decision_id)
            assert {key: shown[key] for key in HITL_COLUMNS[:5]} == {
                "HitlTaskType": "refund_request", "HitlRisk": "critical",
                "HitlZone": "escalate", "HitlStatus": "pending_review",
                "HitlConfidence": "0.93"}
            description = await client.get_workflow_handle(refund.decision_id).describe()
            deadline = description.typed_search_attributes.get(sa.SLA_DEADLINE)
            assert deadline is not None  # escalated: SLA 5m
            assert shown["HitlSlaDeadline"].startswith(
                f"{deadline:%b} {deadline.day}, {deadline.year}, "
                f"{deadline.hour % 12 or 12}:{deadline:%M:%S}"), shown["HitlSlaDeadline"]
            shown = await cells(moderation.decision_id)
            assert (shown["HitlTaskType"], shown["HitlRisk"], shown["HitlConfidence"]) == (
                "content_moderation", "high", "0.6")
            body = await page.inner_text("body")
            assert automatic.decision_id not in body and queued.decision_id not in body
            update = bool(os.environ.get("HITL_UPDATE_SCREENSHOT"))
            await page.screenshot(path=str(SCREENSHOT if update else tmp_path / "list.png"))

            # One decision: its summary, the request context and the live details.
            await page.set_viewport_size({"width": 1680, "height": 720})
            await page.goto(f"http://127.0.0.1:{ui_port}/namespaces/{namespace}"
                            f"/workflows/{refund.decision_id}")
            await page.get_by_text("User Metadata", exact=True).first.click()
            # The UI renders summary and details as markdown in sandboxed frames.
            shown_text = ""
            for _ in range(30):
                shown_text = "\n".join([await frame.inner_text("body") for frame in page.frames
                                        if frame != page.main_frame])
                if "waiting for review" in shown_text:
                    break
                await page.wait_for_timeout(500)
            assert "refund_request: refund for svc-billing · confidence 0.93" in shown_text
            assert "waiting for review" in shown_text and "approvals: 0 of 2" in shown_text
            await page.screenshot(path=str(DETAIL if update else tmp_path / "detail.png"),
                                  full_page=True)
            await browser.close()
        await reject(hitl, refund.decision_id, RejectInput(reviewer="rita", reason="test"))
        await hitl.wait(refund.decision_id, timeout=20)
