"""Closed-loop load, latency summaries and a plain progress bar on stderr.

Closed loop: ``concurrency`` tasks each take the next item and await the whole
operation before taking another, so the offered load adapts to what the system
sustains and throughput is completed operations over wall time.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TextIO, TypeVar

T = TypeVar("T")


class Progress:
    """``label [#####.....] done/total rate/s`` redrawn in place on a terminal;
    on a pipe (CI logs) one line per quarter, so logs stay readable."""

    def __init__(self, label: str, total: int, *, enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        self.label, self.total, self.done = label, max(total, 1), 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.started = time.perf_counter()
        self._drawn = 0.0
        self._quarter = 0

    def advance(self, count: int = 1) -> None:
        self.done += count
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if now - self._drawn >= 0.1 or self.done >= self.total:
                self._drawn = now
                self._draw(now, end="")
        elif self.done * 4 // self.total > self._quarter:
            self._quarter = self.done * 4 // self.total
            self._draw(now, end="\n")

    def restart(self) -> None:
        self.started = time.perf_counter()
        self._drawn = 0.0

    def set(self, done: int) -> None:
        """Jump to ``done`` (for progress read from a count, not from completions)."""
        if done > self.done:
            self.advance(done - self.done)

    def close(self) -> None:
        if self.tty:
            self._draw(time.perf_counter(), end="\n")

    def _draw(self, now: float, *, end: str) -> None:
        width = 30
        filled = min(width, width * self.done // self.total)
        rate = self.done / max(now - self.started, 1e-9)
        prefix = "\r" if self.tty else ""
        self.stream.write(f"{prefix}{self.label:<34} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{self.done}/{self.total} {rate:7.1f}/s{end}")
        self.stream.flush()


@dataclass(frozen=True)
class LoadResult:
    latencies: list[float]  # seconds, one per completed operation
    wall_seconds: float
    errors: list[str]

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall_seconds if self.wall_seconds else 0.0


async def closed_loop(items: Sequence[T], operation: Callable[[T], Awaitable[float]], *,
                      concurrency: int, progress: Progress | None = None) -> LoadResult:
    """Run ``operation`` (which returns its own latency) over ``items``."""
    latencies: list[float] = []
    errors: list[str] = []
    queue = iter(items)

    async def runner() -> None:
        for item in queue:
            try:
                latencies.append(await operation(item))
            except Exception as exc:  # a failed operation is a result, not a crash
                errors.append(f"{type(exc).__name__}: {exc}")
            if progress is not None:
                progress.advance()

    if progress is not None:
        progress.restart()
    started = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(max(1, min(concurrency, len(items))))))
    wall = time.perf_counter() - started
    if progress is not None:
        progress.close()
    return LoadResult(latencies=latencies, wall_seconds=wall, errors=errors)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary_ms(values: Sequence[float]) -> dict[str, float | None]:
    def ms(q: float) -> float | None:
        value = percentile(values, q)
        return None if value is None else round(value * 1000, 2)

    return {"p50": ms(50), "p95": ms(95), "p99": ms(99), "max": ms(100)}


async def until(predicate: Callable[[], Awaitable[bool]], *, within: float,
                interval: float = 0.25, what: str = "condition") -> float:
    """Poll ``predicate`` until true; returns the seconds it took."""
    started = time.perf_counter()
    while not await predicate():
        if time.perf_counter() - started > within:
            raise TimeoutError(f"{what} not reached within {within:.0f}s")
        await asyncio.sleep(interval)
    return time.perf_counter() - started
