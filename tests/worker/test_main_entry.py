"""``python -m worker`` (the Docker image's command) as a process, against no Temporal."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import BIN

ROOT = Path(__file__).resolve().parents[2]
RUNS = 5  # the interpreter-shutdown abort (exit 134) showed up in about one run in four


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_unreachable_temporal_is_one_line_like_hitl_worker(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("HITL_")}
    env.update(HITL_TEMPORAL_ADDRESS=address, HITL_DATA_DIR=str(tmp_path))

    reference = _run([str(BIN / "hitl"), "worker"], env)
    assert reference.returncode == 1 and address in reference.stderr, reference.stderr

    for run in range(RUNS):
        result = _run([sys.executable, "-m", "worker"], env)
        where = f"run {run + 1}: exit {result.returncode}\n{result.stderr}"
        assert result.returncode not in (0, 134), where
        assert "Traceback" not in result.stderr and "Fatal Python error" not in result.stderr, where
        assert result.stderr.count("\n") == 1 and address in result.stderr, where
        assert (result.returncode, result.stderr) == (reference.returncode, reference.stderr), where
        assert result.stdout == "", where
