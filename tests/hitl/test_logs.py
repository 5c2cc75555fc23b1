"""The worker's runtime forwards the SDK core's log lines into hitl's JSON logs.

Left to itself the core prints colourised text on standard output; the worker
runtime sends it through Python logging instead (``hitl.temporal_core``), so
it is structured like every other line and nothing is written to stdout.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from hitl.logs import JsonFormatter
from hitl.telemetry import CORE_LOGGER, worker_runtime
from workflows.recalibration import RecalibrationWorkflow


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.timeout(60)
async def test_core_log_lines_come_out_as_json_not_on_stdout(
        client: Client, task_queue: str, capfd: pytest.CaptureFixture[str]) -> None:
    lines = _Lines()
    core_logger = logging.getLogger(CORE_LOGGER)
    core_logger.addHandler(lines)
    core_logger.setLevel(logging.DEBUG)
    try:
        # DEBUG, so that starting and stopping a worker is enough to make the core
        # talk; the worker's own runtime uses WARN.
        runtime = worker_runtime(None, core_level="DEBUG")
        debug_client = await Client.connect(
            client.service_client.config.target_host, namespace=client.namespace,
            runtime=runtime)
        async with Worker(debug_client, task_queue=task_queue,
                          workflows=[RecalibrationWorkflow]):
            for _ in range(100):
                if lines.lines:
                    break
                await asyncio.sleep(0.1)
    finally:
        core_logger.removeHandler(lines)
        core_logger.setLevel(logging.NOTSET)
    assert lines.lines, "the core forwarded nothing at DEBUG"
    entries = [json.loads(line) for line in lines.lines]
    assert {e["logger"] for e in entries} == {CORE_LOGGER}
    assert all(e["target"].startswith("temporalio_") for e in entries), entries[:3]
    assert all(e["level"] in {"debug", "info", "warning", "error"} for e in entries)
    out = capfd.readouterr().out
    assert "temporalio_sdk_core" not in out and "DEBUG" not in out, out[:500]
