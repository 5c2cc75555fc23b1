"""What the benchmark ran on, and per-process memory and CPU from ``/proc`` (Linux).

CPU seconds per decision are the steadiest figure on a shared machine: other
load stretches wall time, not the CPU a process spends on each decision.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from hitl.settings import Settings

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcUsage:
    """A snapshot of one process: resident and peak memory (MB), CPU seconds."""

    rss_mb: float
    peak_rss_mb: float
    cpu_seconds: float


def proc_usage(pid: int) -> ProcUsage | None:
    """The process's memory and CPU, or None where ``/proc`` does not have it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].split()
              for line in status.splitlines() if ":" in line}
    # Fields after the parenthesised command name; utime and stime are 14th and 15th.
    after = stat.rsplit(")", 1)[1].split()
    cpu = (int(after[11]) + int(after[12])) / _TICKS
    return ProcUsage(rss_mb=int(fields.get("VmRSS", ["0"])[0]) / 1024,
                     peak_rss_mb=int(fields.get("VmHWM", ["0"])[0]) / 1024, cpu_seconds=cpu)


def children_matching(text: str) -> list[int]:
    """PIDs of this process's children whose command line contains ``text``."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me and text in cmdline:
            found.append(int(entry.name))
    return found


def _first(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _command(*args: str) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def machine_info(temporal_binary: str) -> dict[str, str | int | float | None]:
    """Cores, memory, CPU model, load, software versions, the git commit and the
    hitl worker's sandbox and cache settings."""
    worker = Settings()
    mem_kb = _first("/proc/meminfo", "MemTotal")
    try:
        load = Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        load = None
    return {
        "cpu_model": _first("/proc/cpuinfo", "model name") or platform.processor() or None,
        "cores": os.cpu_count(),
        "memory_gb": round(int(mem_kb.split()[0]) / 1024 / 1024, 1) if mem_kb else None,
        "load_average_1m_at_start": float(load) if load else None,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "temporalio": _version("temporalio"),
        "temporal_cli": _command(temporal_binary, "--version"),
        "pydantic": _version("pydantic"),
        "sqlalchemy": _version("sqlalchemy"),
        "hitl": _version("hitl"),
        "git_commit": _commit(),
        # The worker settings that move the figures, as the hitl worker reads them from
        # the same environment.
        "workflow_sandbox": worker.workflow_sandbox,
        "max_cached_workflows": worker.max_cached_workflows,
    }


def _commit() -> str | None:
    """The checkout's commit, ``+changes`` when files differ from it."""
    tree = str(Path(__file__).resolve().parents[2])
    commit = _command("git", "-C", tree, "rev-parse", "--short", "HEAD")
    if commit and _command("git", "-C", tree, "status", "--porcelain", "--untracked-files=no"):
        commit += " +changes"
    return commit
