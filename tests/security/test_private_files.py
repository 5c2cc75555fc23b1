"""Data at rest: what hitl creates to hold decisions is readable by its owner only.

Real files: the SQLite store (with its ``-wal`` and ``-shm``) made by ``make_engine``,
and the dev server ``hitl up`` starts (``temporal.db``, ``temporal.log``), checked with
``os.stat`` under the common umask 022, which would otherwise leave them world-readable.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from hitl.devserver import DevServer
from hitl.store import init_store, make_engine

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_store_and_its_directory_are_created_private(tmp_path: Path,
                                                         umask_022: None) -> None:
    data_dir = tmp_path / "nested" / ".hitl"
    database = data_dir / "hitl.db"
    engine = make_engine(f"sqlite:///{database}")
    try:
        init_store(engine)
        with engine.connect() as connection:  # WAL: -wal and -shm exist while it is open
            connection.execute(text("SELECT count(*) FROM decisions")).scalar_one()
            wal, shm = database.with_name("hitl.db-wal"), database.with_name("hitl.db-shm")
            assert wal.exists() and shm.exists()
            assert {path.name: _mode(path) for path in (database, wal, shm)} == {
                "hitl.db": 0o600, "hitl.db-wal": 0o600, "hitl.db-shm": 0o600}
    finally:
        engine.dispose()
    assert _mode(data_dir) == 0o700
    assert _mode(data_dir.parent) == 0o755  # a parent it had to make: the umask's


def test_existing_paths_keep_their_mode(tmp_path: Path, umask_022: None) -> None:
    """A directory or file that was there is not ours to change (a URL under /tmp)."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    existing = shared / "hitl.db"
    existing.touch(mode=0o640)
    engine = make_engine(f"sqlite:///{existing}")
    try:
        init_store(engine)
    finally:
        engine.dispose()
    assert (_mode(shared), _mode(existing)) == (0o755, 0o640)


async def test_the_dev_server_writes_its_database_and_log_private(tmp_path: Path,
                                                                  umask_022: None) -> None:
    data_dir = tmp_path / ".hitl"
    server = DevServer(data_dir=data_dir, port=_free_port(), ui_port=_free_port())
    await asyncio.to_thread(server.start)  # returns once the frontend listens
    try:
        files = sorted(path for path in data_dir.iterdir() if path.is_file())
        assert {"temporal.db", "temporal.log"} <= {path.name for path in files}
        assert {path.name: _mode(path) for path in files} == {
            path.name: 0o600 for path in files}  # -wal and -shm too, where present
    finally:
        await asyncio.to_thread(server.stop)
    assert _mode(data_dir) == 0o700
