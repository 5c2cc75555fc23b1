"""What hitl creates to hold decisions at rest is readable by its owner only.

The data directory (``HITL_DATA_DIR``, ``.hitl`` by default) holds the SQLite store
(outputs, reasons, correct answers, the reviewer registry) and, under ``hitl up``, the
dev server's database (every decision's history) and its log. They are created 0700
(the directory) and 0600 (the files) whatever the umask, and the dev server runs with
umask 077 so the files it creates are too. SQLite gives its ``-wal`` and ``-shm`` files
the database file's mode. Only what hitl creates is set: an existing directory or file
keeps its mode, since it may be shared on purpose (a database URL under ``/tmp``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
PRIVATE_UMASK = 0o077  # for a child process: what it creates, only its owner reads


def private_dir(path: Path) -> None:
    """Create ``path`` 0700 if it is missing (its missing parents as the umask says)."""
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # created meanwhile: not ours to change
        path.mkdir(mode=PRIVATE_DIR)
        os.chmod(path, PRIVATE_DIR)  # mkdir's mode passes through the umask


def private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 if it is missing."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
        os.chmod(path, PRIVATE_FILE)


def append_private(path: Path) -> BinaryIO:
    """``path`` opened for appending, created 0600 if it is missing."""
    private_file(path)
    return path.open("ab")
