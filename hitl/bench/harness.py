"""The benchmark's own world: a dev server, a store, and two worker processes.

Everything lives in a temporary directory and dies with the harness: the dev
server keeps its database in memory, the store is a fresh SQLite file with one
reviewer allowed every risk level, and the hitl and baseline workers are
subprocesses on task queues of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from sqlmodel import Session, func, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from hitl import search_attributes as sa
from hitl.bench.machine import ProcUsage, children_matching, proc_usage
from hitl.bench.scenarios import REVIEWER
from hitl.client import HitlClient
from hitl.connection import data_converter
from hitl.enums import RiskLevel
from hitl.errors import HitlError
from hitl.reviewers import add_reviewer
from hitl.store import ExecutionRow, init_store, make_engine

READY_TIMEOUT = 90.0
SERVER_STOP_TIMEOUT = 30.0


class BenchError(HitlError):
    """The benchmark could not run (a worker did not start, a decision went astray)."""


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr while a child process is spawned."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


async def _first_line(fd: int) -> bytes:
    """The first line on pipe ``fd`` (closed afterwards); empty on EOF."""
    reader = asyncio.StreamReader()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb"))
    try:
        return (await reader.readline()).strip()
    finally:
        transport.close()


class WorkerProcess:
    def __init__(self, kind: str, task_queue: str, log: Path) -> None:
        self.kind, self.task_queue, self.log = kind, task_queue, log
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def usage(self) -> ProcUsage | None:
        return proc_usage(self.pid) if self.process is not None else None

    async def start(self, address: str, data_dir: Path, *, bytecode_cache: bool = True) -> None:
        env = dict(os.environ)
        if bytecode_cache:
            # As in the Docker image, where pip compiled every module at install: without
            # .pyc files the sandbox recompiles workflows/decision.py for every new
            # workflow. The cache goes to the temporary directory, not the source tree.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(data_dir / "pycache")
        # Readiness comes on a pipe of its own, closed once read, and both output
        # streams go to the log: the SDK core writes its own log lines to file
        # descriptor 1, and a stdout pipe nobody reads after start-up fills (64 KiB)
        # and blocks the core, which then stops polling with every Python thread idle
        # (the "bulk approval stall" of earlier runs).
        read_fd, write_fd = os.pipe()
        try:
            with self.log.open("ab") as log:
                self.process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "hitl.bench.worker_proc", self.kind,
                    "--address", address, "--task-queue", self.task_queue,
                    "--data-dir", str(data_dir), "--ready-fd", str(write_fd),
                    pass_fds=(write_fd,), stdin=asyncio.subprocess.DEVNULL,
                    stdout=log, stderr=log, env=env)
        finally:
            os.close(write_fd)
        try:
            line = await asyncio.wait_for(_first_line(read_fd), READY_TIMEOUT)
        except TimeoutError:
            line = b""
        if line != b"ready":
            await self.stop()
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"{self.kind} worker did not start; its log ends:\n{tail}")

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


class Harness:
    """``async with Harness(temporal_binary) as h:`` gives ``h.hitl``, ``h.client``,
    ``h.hitl_worker``, ``h.baseline_worker``; everything is torn down on exit."""

    def __init__(self, temporal_binary: str, *, bytecode_cache: bool = True) -> None:
        self.temporal_binary = temporal_binary
        self.bytecode_cache = bytecode_cache
        self._tmp = tempfile.TemporaryDirectory(prefix="hitl-bench-")
        self.data_dir = Path(self._tmp.name)
        run = uuid.uuid4().hex[:8]
        self.hitl_worker = WorkerProcess("hitl", f"bench-hitl-{run}",
                                         self.data_dir / "worker-hitl.log")
        self.baseline_worker = WorkerProcess("baseline", f"bench-base-{run}",
                                             self.data_dir / "worker-baseline.log")
        self.engine = make_engine(f"sqlite:///{self.data_dir / 'hitl.db'}")
        self.env: WorkflowEnvironment | None = None
        self.server_pid: int | None = None
        self.reviewer_token = ""  # the bench reviewer's, set on entry (the API's queue)

    @property
    def client(self) -> Client:
        assert self.env is not None
        return self.env.client

    @property
    def hitl(self) -> HitlClient:
        return HitlClient(self.client, task_queue=self.hitl_worker.task_queue)

    def server_usage(self) -> ProcUsage | None:
        return proc_usage(self.server_pid) if self.server_pid else None

    async def __aenter__(self) -> Harness:
        init_store(self.engine)
        with Session(self.engine) as session:
            _, self.reviewer_token = add_reviewer(session=session, name=REVIEWER,
                                                  risks=list(RiskLevel))
        try:
            # Only the server started here: a test session may already run its own dev
            # server as another child of this process, idle, whose CPU would read ~0.
            earlier = set(children_matching("start-dev"))
            with _stdout_to_stderr():  # the dev server prints a banner: keep stdout the table's
                self.env = await WorkflowEnvironment.start_local(
                    dev_server_existing_path=self.temporal_binary, search_attributes=sa.ALL,
                    data_converter=data_converter(), dev_server_log_level="error")
            servers = [pid for pid in children_matching("start-dev") if pid not in earlier]
            self.server_pid = servers[0] if len(servers) == 1 else None
            address = self.client.service_client.config.target_host
            await asyncio.gather(*(worker.start(address, self.data_dir,
                                                bytecode_cache=self.bytecode_cache)
                                   for worker in (self.hitl_worker, self.baseline_worker)))
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._close()

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.gather(self.hitl_worker.stop(), self.baseline_worker.stop())
        if self.env is not None:
            try:
                # Bounded: a full-size run once hung here for good, the figures already in
                # hand and not yet printed, with the dev server still running.
                await asyncio.wait_for(self.env.shutdown(), SERVER_STOP_TIMEOUT)
            except Exception:  # noqa: BLE001 - teardown: the server must go either way
                if self.server_pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.server_pid, signal.SIGKILL)
        self.engine.dispose()
        self._tmp.cleanup()

    async def count(self, query: str) -> int:
        return (await self.client.count_workflows(query)).count

    def ledger_rows(self) -> int:
        """Rows in the executor's ledger: one per executed (decision, phase)."""
        with Session(self.engine) as session:
            return int(session.exec(select(func.count()).select_from(ExecutionRow)).one())
