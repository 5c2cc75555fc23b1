"""The Temporal UI that ``hitl up`` serves: read-only unless ``--ui-write-actions``.

The rule itself (``allows``) is checked alone, for paths a browser would never send;
the proxy's HTTP behaviour against a real dev server's UI (encodings, each browser's
CSRF cookie, refusals). The end-to-end tests run ``hitl up`` itself (a subprocess with
its own dev server and worker; encryption on for the read-only run), open the UI it
prints in Debian's Chromium, and attack the UI's API the way a script would: a forged
reviewer signal to the UI server's signal endpoint, with the CSRF token the UI hands
out, must be refused and leave the decision's history as it was; with the opt-in the
same request lands.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from hitl.api.ui_proxy import (
    MAX_QUERY_BODY,
    WRITE_ACTION_FLAGS,
    allows,
    read_only_settings,
    serving_read_only_ui,
)
from hitl.client import HitlClient
from hitl.codec import generate_key
from hitl.connection import data_converter
from hitl.devserver import DevServer, free_port
from hitl.enums import DecisionStatus
from hitl.review import RejectInput
from hitl.settings import Settings
from tests.api.conftest import until
from tests.conftest import BIN
from tests.factories import make_request
from tests.workflows.test_temporal_ui import CHROMIUM, CHROMIUM_ARGS

QUERY = "/api/v1/namespaces/default/workflows/d-1/query/state"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/v1/namespaces/default/workflows"),
    ("GET", "/api/v1/namespaces/default/workflows/d-1/history"),
    ("HEAD", "/namespaces/default/workflows"),
    ("OPTIONS", "/api/v1/namespaces/default/workflows/d-1/signal/approve"),
    ("POST", QUERY),
    ("POST", "/api/v1/namespaces/default/workflows/d-1/query/__stack_trace"),
    ("POST", "/api/v1/namespaces/default/workflows/refund%3A8841/query/state"),
])
def test_reads_pass(method: str, path: str) -> None:
    assert allows(method, path)


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/v1/namespaces/default/workflows/d-1/signal/approve"),
    ("POST", "/api/v1/namespaces/default/workflows/d-1/update/approve"),
    ("POST", "/api/v1/namespaces/default/workflows/d-1/reset"),
    ("POST", "/api/v1/namespaces/default/workflows/d-1/terminate"),
    ("POST", "/api/v1/namespaces/default/workflows/d-1/cancel"),
    ("POST", "/api/v1/namespaces/default/workflows/d-1"),  # start
    ("POST", "/api/v1/namespaces/default/batch-operations/job-1"),
    ("POST", "/api/v1/namespaces/default/schedules/s-1/patch"),
    ("DELETE", "/api/v1/namespaces/default/schedules/s-1"),
    ("PUT", QUERY), ("PATCH", QUERY), ("DELETE", QUERY), ("PROPFIND", QUERY),
    # An encoded "/" or a dot segment turns a query's shape into something else.
    ("POST", "/api/v1/namespaces/default/workflows/d%2Fsignal%2Fapprove/query/state"),
    ("POST", "/api/v1/namespaces/default/workflows/d-1/query/state%2F..%2F..%2Fsignal"),
    ("POST", "/api/v1/namespaces/default/workflows/../query/state"),
    ("POST", "/api/v1/namespaces/../workflows/d-1/query/state"),
    ("POST", "/api/v1/namespaces/default/workflows/d-1/query/state/"),
    ("POST", "/api/v1/namespaces/default/workflows/d-1/query/state/signal/approve"),
    ("POST", "/x/api/v1/namespaces/default/workflows/d-1/query/state"),
    # What the UI server's own read-only rule (decoded path holds /workflows/ and /query/)
    # lets through: a batch operation whose job ID carries them, encoded.
    ("POST", "/api/v1/namespaces/default/batch-operations/j%2Fworkflows%2Fx%2Fquery%2Fy"),
])
def test_writes_are_refused(method: str, path: str) -> None:
    assert not allows(method, path)


def test_settings_switch_off_every_write_action_and_keep_the_rest() -> None:
    upstream: dict[str, object] = {
        "Version": "2.54.1", "Codec": {"Endpoint": "http://127.0.0.1:8000/codec"},
        "RefreshWorkflowCountsDisabled": False, "HideWorkflowQueryErrors": False,
        **dict.fromkeys(WRITE_ACTION_FLAGS, False)}
    rewritten = read_only_settings(upstream)
    assert all(rewritten[flag] is True for flag in WRITE_ACTION_FLAGS)
    assert {k: v for k, v in rewritten.items() if k not in WRITE_ACTION_FLAGS} == {
        "Version": "2.54.1", "Codec": {"Endpoint": "http://127.0.0.1:8000/codec"},
        "RefreshWorkflowCountsDisabled": False, "HideWorkflowQueryErrors": False}


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
async def proxied_ui(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, str]]:
    """A dev server's UI on an internal port and the proxy in front: (proxy, UI) URLs."""
    server = DevServer(data_dir=tmp_path_factory.mktemp("devserver"), port=free_port(),
                       ui_port=free_port())
    await asyncio.to_thread(server.start)
    try:
        async with serving_read_only_ui(server.ui_url) as url, \
                httpx.AsyncClient(base_url=url, timeout=10) as http:
            async def ui_answers() -> bool:  # and the frontend behind it
                return (await http.get("/api/v1/namespaces/default")).status_code == 200

            await until(ui_answers, within=30)
            yield url, server.ui_url
    finally:
        await asyncio.to_thread(server.stop)


async def raw_get(url: str, path: str) -> bytes:
    """A GET with no Accept-Encoding at all, as a minimal HTTP client sends it."""
    parts = httpx.URL(url)
    assert parts.host == "127.0.0.1" and parts.port is not None
    reader, writer = await asyncio.open_connection(parts.host, parts.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {parts.host}\r\nConnection: close\r\n\r\n"
                 .encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


async def test_bodies_pass_in_an_encoding_the_client_accepts(
        proxied_ui: tuple[str, str]) -> None:
    proxy, ui = proxied_ui
    head, _, body = (await raw_get(proxy, "/api/v1/namespaces/default")).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-encoding" not in head.lower()
    assert json.loads(body)["namespaceInfo"]["name"] == "default"
    async with httpx.AsyncClient(timeout=10) as http:  # sends gzip, decodes it
        proxied = await http.get(f"{proxy}/api/v1/namespaces/default")
        direct = await http.get(f"{ui}/api/v1/namespaces/default")
    assert proxied.headers["content-encoding"] == direct.headers["content-encoding"] == "gzip"
    assert proxied.json()["namespaceInfo"] == direct.json()["namespaceInfo"]


async def test_each_browser_keeps_its_own_csrf_token(proxied_ui: tuple[str, str]) -> None:
    proxy, _ = proxied_ui
    tokens = set()
    for _ in range(2):
        async with httpx.AsyncClient(base_url=proxy, timeout=10) as http:
            settings = await http.get("/api/v1/settings")
            assert settings.json()["DisableWriteActions"] is True
            tokens.add(settings.cookies["_csrf"])
    assert len(tokens) == 2


async def test_refusals_and_bounds(proxied_ui: tuple[str, str]) -> None:
    proxy, _ = proxied_ui
    async with httpx.AsyncClient(base_url=proxy, timeout=10) as http:
        for method in ("PUT", "PATCH", "DELETE"):
            refused = await http.request(method, "/api/v1/namespaces/default/schedules/s-1")
            assert refused.status_code == 403 and refused.json()["code"] == 7
        assert (await http.head("/namespaces/default/workflows")).status_code != 403
        too_big = await http.post(QUERY, content=b"x" * (MAX_QUERY_BODY + 1))
        assert too_big.status_code == 413




@dataclass
class Up:
    banner: str
    stderr: Path
    ui: str
    api: str
    client: Client
    hitl: HitlClient


@contextlib.asynccontextmanager
async def hitl_up(tmp_path: Path, *flags: str, encrypted: bool = False) -> AsyncIterator[Up]:
    """``hitl up`` on free ports, until it printed its banner; Ctrl-C on exit."""
    temporal_port, ui_port, api_port = free_port(), free_port(), free_port()
    settings = Settings(task_queue=f"ui-{uuid.uuid4().hex[:8]}", data_dir=tmp_path,
                        codec_keys=f"k1={generate_key()}" if encrypted else None,
                        codec_key_id="k1" if encrypted else None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
    env |= {"HITL_DATA_DIR": str(tmp_path), "HITL_TASK_QUEUE": settings.task_queue}
    if settings.codec_keys is not None:
        env |= {"HITL_CODEC_KEYS": settings.codec_keys.get_secret_value(),
                "HITL_CODEC_KEY_ID": "k1"}
    stderr = tmp_path / "hitl-up.stderr"
    with stderr.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            str(BIN / "hitl"), "up", "--temporal-port", str(temporal_port),
            "--ui-port", str(ui_port), "--api-port", str(api_port), *flags,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=err)
    try:
        assert process.stdout is not None
        banner = ""
        while not banner.endswith("Ctrl-C stops.\n"):
            line = (await process.stdout.readline()).decode()
            assert line, f"hitl up exited: {stderr.read_text()}"
            banner += line
        ui = f"http://127.0.0.1:{ui_port}"
        async with httpx.AsyncClient(base_url=ui, timeout=10) as http:
            async def ui_answers() -> bool:  # the UI listens shortly after the frontend
                with contextlib.suppress(httpx.TransportError):
                    return (await http.get("/api/v1/settings")).status_code == 200
                return False

            await until(ui_answers, within=30)
        client = await Client.connect(f"127.0.0.1:{temporal_port}",
                                      data_converter=data_converter(settings))
        yield Up(banner, stderr, ui, f"http://127.0.0.1:{api_port}", client,
                 HitlClient(client, task_queue=settings.task_queue))
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
    assert process.returncode == 0, stderr.read_text()


async def waiting_decision(up: Up) -> str:
    request = make_request(confidence=0.5)  # low risk, not confident: waits in the queue
    await up.hitl.submit(request)

    async def at_the_gate() -> bool:
        return (await up.hitl.status(request.decision_id)).status is DecisionStatus.PENDING_REVIEW

    await until(at_the_gate, within=30)
    return request.decision_id


async def forge_reject(ui: str, decision_id: str) -> httpx.Response:
    """A reviewer's "reject" signal sent as the UI sends signals: its API, its CSRF token."""
    review = RejectInput(reviewer="mallory", reason="sent through the Temporal UI")
    payload = {"metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
               "data": base64.b64encode(review.model_dump_json().encode()).decode()}
    async with httpx.AsyncClient(base_url=ui, timeout=10) as http:
        settings = await http.get("/api/v1/settings")  # sets the _csrf cookie, as for the UI
        return await http.post(
            f"/api/v1/namespaces/default/workflows/{decision_id}/signal/reject",
            headers={"X-CSRF-TOKEN": settings.cookies["_csrf"]},
            json={"signalName": "reject", "workflowExecution": {"workflowId": decision_id},
                  "input": {"payloads": [payload]}})


async def signals(client: Client, decision_id: str) -> list[str]:
    return [event.workflow_execution_signaled_event_attributes.signal_name
            async for event in client.get_workflow_handle(decision_id).fetch_history_events()
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]


needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install -y chromium)")


@needs_chromium
async def test_hitl_up_serves_the_ui_read_only(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    async with hitl_up(tmp_path, encrypted=True) as up:
        assert re.search(rf"Temporal UI   {up.ui}/namespaces/default/workflows  \(read-only",
                         up.banner), up.banner
        decision_id = await waiting_decision(up)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                       args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1600, "height": 900})
            # The list, as an operator watches it; no batch selection (no row checkboxes).
            await page.goto(f"{up.ui}/namespaces/default/workflows")
            rows = page.get_by_test_id("workflows-summary-configurable-table-row")
            await expect(rows.filter(has_text=decision_id)).to_be_visible(timeout=15_000)
            await expect(page.get_by_role("checkbox")).to_have_count(0)

            # The decision's page: its history loads (the UI's query POSTs pass) ...
            await page.goto(f"{up.ui}/namespaces/default/workflows/{decision_id}")
            await expect(page.get_by_role("heading", name=decision_id)).to_be_visible(
                timeout=15_000)
            await page.locator("#history-tab").click()
            await expect(page.get_by_text("Workflow Execution Started").first).to_be_visible(
                timeout=15_000)
            # ... and no action can be taken: the menu holding them does not open.
            await expect(page.get_by_role("button", name="More Actions")).to_be_disabled()
            await expect(page.get_by_role("button", name="Request Cancellation")
                         ).to_be_disabled()
            for action in ("signal-button", "terminate-button", "reset-button",
                           "update-button"):
                items = page.get_by_test_id(action)
                assert await items.count() > 0, action  # the UI's own names still hold
                for item in await items.all():
                    await expect(item).to_be_hidden()
                    await expect(item).to_be_disabled()
            await browser.close()

        forged = await forge_reject(up.ui, decision_id)
        assert forged.status_code == 403
        assert "read-only" in forged.json()["message"]
        assert "--ui-write-actions" in forged.json()["message"]
        async with httpx.AsyncClient(base_url=up.ui, timeout=10) as http:
            # The UI's own names (2.54): a misspelt flag would leave its action on screen.
            settings = (await http.get("/api/v1/settings")).json()
            assert {flag: settings[flag] for flag in WRITE_ACTION_FLAGS} == dict.fromkeys(
                WRITE_ACTION_FLAGS, True)
            # The rest passes: the UI still decodes through hitl's codec server.
            assert settings["Codec"]["Endpoint"] == f"{up.api}/codec"
            queried = await http.post(
                f"/api/v1/namespaces/default/workflows/{decision_id}/query/state",
                headers={"X-CSRF-TOKEN": http.cookies["_csrf"]},
                json={"execution": {"workflowId": decision_id}, "query": {"queryType": "state"}})
            assert queried.status_code == 200, queried.text
            assert queried.json()["queryResult"]["payloads"]
        assert '"temporal ui write refused"' in up.stderr.read_text()

        # A real review closes the decision: whatever reached it is in its history now.
        token = re.search(r"token (hitl_\S+)", up.banner)  # demo's, printed once
        assert token is not None, up.banner
        shown = await up.hitl.content(decision_id)
        await up.hitl.reject(decision_id, RejectInput(
            reviewer="demo", reason="checked", content_sha256=shown.sha256),
            token=token.group(1))
        assert (await up.hitl.wait(decision_id, timeout=20)).status is DecisionStatus.REJECTED
        assert await signals(up.client, decision_id) == []
        state = await up.hitl.status(decision_id)
        assert [review.reviewer for review in state.reviews] == ["demo"]


@needs_chromium
async def test_ui_write_actions_opt_in_serves_the_ui_as_before(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    async with hitl_up(tmp_path, "--ui-write-actions") as up:
        assert re.search(rf"Temporal UI   {up.ui}/namespaces/default/workflows  \(write",
                         up.banner), up.banner
        warning = up.stderr.read_text().splitlines()[0]
        assert warning.startswith("hitl: warning: --ui-write-actions: anyone who can open")
        decision_id = await waiting_decision(up)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                       args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1600, "height": 900})
            await page.goto(f"{up.ui}/namespaces/default/workflows/{decision_id}")
            more = page.get_by_role("button", name="More Actions")
            await expect(more).to_be_enabled(timeout=15_000)
            await more.click()
            await expect(page.get_by_role("menuitem", name="Send a Signal")).to_be_enabled()
            await browser.close()

        forged = await forge_reject(up.ui, decision_id)
        assert forged.status_code == 200, forged.text
        assert await signals(up.client, decision_id) == ["reject"]



def test_a_dev_server_without_ui_serves_none(tmp_path: Path) -> None:
    """Without the ``api`` extra there is no proxy: ``hitl up`` starts no UI at all
    rather than a writable one."""
    command = DevServer(data_dir=tmp_path, ui=False).command()
    assert "--headless" in command and "--ui-port" not in command
    assert "--headless" not in DevServer(data_dir=tmp_path).command()
