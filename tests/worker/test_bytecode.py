"""The worker caches bytecode for what the sandbox re-imports on every workflow run."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

import pytest
from temporalio.worker.workflow_sandbox._importer import Importer
from temporalio.worker.workflow_sandbox._restrictions import RestrictionContext

from worker.bytecode import cache_bytecode
from worker.main import REIMPORTED, SANDBOX
from workflows.decision import DecisionWorkflow
from workflows.recalibration import RecalibrationWorkflow

ROOT = Path(__file__).resolve().parents[2]


def _fresh_module(tmp_path: Path, name: str) -> object:
    source = tmp_path / f"{name}.py"
    source.write_text("VALUE = 41 + 1\n")
    spec = importlib.util.spec_from_file_location(name, source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_writes_the_pyc_the_import_system_reads(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # as PYTHONDONTWRITEBYTECODE=1
    module = _fresh_module(tmp_path, "hitl_bytecode_probe")
    source = str(tmp_path / "hitl_bytecode_probe.py")
    cached = Path(importlib.util.cache_from_source(source))
    assert not cached.exists()  # the import above did not write one
    assert cache_bytecode([module]) == [cached]  # type: ignore[list-item]
    assert cached.read_bytes()[:4] == importlib.util.MAGIC_NUMBER
    loader = importlib.machinery.SourceFileLoader("hitl_bytecode_probe", source)
    code = loader.get_code("hitl_bytecode_probe")
    namespace: dict[str, object] = {}
    exec(code, namespace)  # noqa: S102 - the module just compiled
    assert namespace["VALUE"] == 42
    assert cache_bytecode([module]) == []  # type: ignore[list-item]  # up to date: not rewritten


def test_a_stale_pyc_is_rewritten(tmp_path: Path) -> None:
    module = _fresh_module(tmp_path, "hitl_bytecode_stale")
    source = tmp_path / "hitl_bytecode_stale.py"
    cached = Path(importlib.util.cache_from_source(str(source)))
    cached.parent.mkdir(exist_ok=True)
    cached.write_bytes(b"stale")
    os.utime(cached, (1, 1))  # older than the source
    assert cache_bytecode([module]) == [cached]  # type: ignore[list-item]
    assert cached.read_bytes()[:4] == importlib.util.MAGIC_NUMBER


def _loaded_afresh(module: str) -> set[str]:
    """The project's modules the worker's sandbox loads anew for each run of a
    workflow defined in ``module`` (passed-through ones and restricted proxies aside)."""
    importer = Importer(SANDBOX.restrictions, RestrictionContext(), workflow_module_name=module)
    namespace: dict[str, object] = {"importer": importer}
    exec(f"with importer.applied():\n  import {module}\n", namespace)  # noqa: S102
    return {name for name, loaded in importer.new_modules.items()
            if loaded is not sys.modules.get(name)
            and Path(getattr(loaded, "__file__", None) or "/").resolve().is_relative_to(ROOT)}


def test_the_worker_caches_what_the_sandbox_imports_afresh() -> None:
    reimported = {m.__name__ for m in REIMPORTED}
    for workflow in (DecisionWorkflow, RecalibrationWorkflow):
        afresh = _loaded_afresh(workflow.__module__)
        assert workflow.__module__ in afresh  # the workflow's own code stays sandboxed
        assert afresh <= reimported, afresh - reimported
    cache_bytecode(REIMPORTED)
    for module in REIMPORTED:
        assert module.__file__ is not None
        assert Path(importlib.util.cache_from_source(module.__file__)).exists()
