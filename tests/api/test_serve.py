"""``hitl serve`` as docker-compose runs it: a subprocess, its health check, a clean stop."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from hitl.api.server import bind
from hitl.codec import generate_key
from tests.conftest import BIN

pytestmark = pytest.mark.timeout(60)


UI = "http://127.0.0.1:8233"


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "codec"])
async def test_hitl_serve_answers_health_and_stops_cleanly(client: Client, tmp_path: Path,
                                                          encrypted: bool) -> None:
    env = {**os.environ, "HITL_TEMPORAL_ADDRESS": client.service_client.config.target_host,
           "HITL_NAMESPACE": client.namespace, "HITL_DATA_DIR": str(tmp_path)}
    if encrypted:  # the codec server, with the Temporal UI's origin allowed
        env |= {"HITL_CODEC_KEYS": f"k1={generate_key()}", "HITL_CODEC_KEY_ID": "k1",
                "HITL_CODEC_CORS_ORIGINS": UI}
    process = await asyncio.create_subprocess_exec(
        str(BIN / "hitl"), "serve", "--host", "127.0.0.1", "--port", "0", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert match, line
        async with httpx.AsyncClient(base_url=match.group(1)) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            assert (await http.get("/openapi.json")).json()["info"]["title"] == "hitl"
            assert (await http.get("/api/queue")).status_code == 401
            preflight = await http.options("/codec/decode", headers={
                "Origin": UI, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace"})
            if encrypted:
                assert preflight.status_code == 204, preflight.text
                assert preflight.headers["access-control-allow-origin"] == UI
                assert (await http.post("/codec/decode", json={"payloads": []},
                                        headers={"Origin": UI})).status_code == 401
            else:
                assert "access-control-allow-origin" not in preflight.headers
                assert (await http.post("/codec/decode", json={"payloads": []})).status_code \
                    == 404
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert (tmp_path / "hitl.db").exists(), "the store is created on start"


def test_connections_the_api_accepts_send_without_delay() -> None:
    """Accepted connections inherit TCP_NODELAY from the socket ``bind`` returns. Without
    it every request after the first on a kept-alive connection (the review page's, a
    service's httpx client) waited about 40 ms for the client's delayed ACK."""
    listener = bind("127.0.0.1", 0)
    with listener, socket.create_connection(listener.getsockname()[:2]):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
