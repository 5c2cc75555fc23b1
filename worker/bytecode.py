"""Compiled bytecode for the modules the workflow sandbox re-imports.

The sandbox imports a workflow's module afresh for every workflow run, and for
every replay after a cache eviction. Python reads that module from its ``.pyc``
when one is there; without one (an editable install, or any process started with
``PYTHONDONTWRITEBYTECODE=1``, which only stops the import system writing it)
every run compiles ``workflows/decision.py`` from source again: 5 ms of CPU per
decision on the benchmark machine, more than a decision's store writes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import py_compile
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

log = logging.getLogger("hitl.worker")


def cache_bytecode(modules: Iterable[ModuleType]) -> list[Path]:
    """Write each module's ``.pyc`` where the import system looks for it, unless an
    up-to-date one is there; returns the files written. A directory that cannot be
    written to is logged, not fatal: the worker runs, only at a higher CPU cost."""
    written = []
    for module in modules:
        source = module.__spec__.origin if module.__spec__ else None
        if not source or not source.endswith(".py"):
            continue
        cached = Path(importlib.util.cache_from_source(source))
        if cached.exists() and cached.stat().st_mtime >= os.stat(source).st_mtime:
            continue
        try:
            py_compile.compile(source, cfile=str(cached), doraise=True)
        except (OSError, py_compile.PyCompileError) as exc:
            log.warning("workflow bytecode not cached; each workflow run compiles it again",
                        extra={"module": module.__name__, "error": str(exc)[:200]})
            continue
        written.append(cached)
    return written
