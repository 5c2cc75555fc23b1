"""The worker's Prometheus endpoint: the SDK's metrics and hitl's, scraped for real."""

from __future__ import annotations

import re
import socket

import httpx
import pytest
from temporalio.client import Client

from hitl.connection import connect
from hitl.review import RejectInput
from hitl.settings import Settings
from tests.conftest import WorkerFactory
from tests.factories import make_request
from tests.http_servers import Judge, LocalServer
from tests.reviewing import reject


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of the first sample of ``name`` carrying all ``labels``."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{key}="{value}"' in line for key, value in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels}")


@pytest.mark.timeout(60)
async def test_metrics_endpoint_exports_sdk_and_hitl_metrics(
        hitl_worker: WorkerFactory, client: Client,
        judge_server: tuple[LocalServer, Judge]) -> None:
    server, judge = judge_server
    address = f"127.0.0.1:{_free_port()}"
    settings = Settings(temporal_address=client.service_client.config.target_host,
                        namespace=client.namespace, metrics_address=address)
    exporting = await connect(settings, for_worker=True)
    async with hitl_worker(temporal=exporting, judge_url=server.url) as hitl:
        await hitl.decide(make_request(confidence=0.95), timeout=20)
        judge.mode = "500"
        queued = make_request(confidence=0.95)
        await hitl.submit(queued)
        await reject(hitl, queued.decision_id, RejectInput(reviewer="rita", reason="x"))
        await hitl.wait(queued.decision_id, timeout=30)
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://{address}/metrics", timeout=5)).text
    assert _sample(text, "hitl_decisions_total", zone="auto", outcome="executed") >= 1
    assert _sample(text, "hitl_decisions_total", zone="queue", outcome="rejected") >= 1
    assert _sample(text, "hitl_judge_failures_total", judge="error") >= 1
    assert _sample(text, "hitl_escalations_total", zone="queue") >= 1
    assert _sample(text, "hitl_review_latency_count", verdict="reject") >= 1
    assert re.search(r"^temporal_workflow_completed_total\{", text, re.M)  # the SDK's own
