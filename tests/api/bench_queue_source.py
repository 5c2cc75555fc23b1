"""Measure the review queue's two candidate sources: Temporal visibility or a store table.

    .venv/bin/python -m tests.api.bench_queue_source [--sizes 500,1000,2000] [--rows 10000]

Starts a throwaway dev server (its own in-memory database), creates pending
decisions with the search attributes a waiting DecisionWorkflow has (no worker:
only the visibility rows matter for listing), and times the first page of the
queue as the API computes it from visibility (read every match, sort by
priority then SLA deadline, slice). Then times the same page from a synthetic
SQLite table of ``--rows`` rows with an index on (status, priority,
sla_deadline), and from PostgreSQL when one listens on 127.0.0.1:5432.
Not a test: run by hand, numbers go into the report and the README.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from hitl import search_attributes as sa
from hitl.api.queue import QueueQuery, VisibilityQueue
from hitl.client import HitlClient
from hitl.connection import data_converter
from hitl.enums import Zone
from tests.conftest import BIN, POSTGRES_URL, postgres_available
from tests.factories import make_request

PAGE = 50
ZONES = (("queue", "low", 3), ("queue", "medium", 3), ("escalate", "high", 1),
         ("escalate", "critical", 1))


async def _timed(fn: Callable[[], Awaitable[Any]], repeat: int = 5) -> float:
    """Median wall time in milliseconds."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def _create(hitl: HitlClient, count: int, offset: int) -> None:
    now = datetime.now(UTC)
    rng = random.Random(offset)

    async def one(i: int) -> None:
        zone, risk, priority = rng.choice(ZONES)
        request = make_request(decision_id=f"bench-{offset + i:06d}")
        await hitl.temporal.start_workflow(
            "DecisionWorkflow", request, id=request.decision_id, task_queue="bench-no-worker",
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(sa.TASK_TYPE, "ticket_classification"),
                SearchAttributePair(sa.STATUS, "pending_review"),
                SearchAttributePair(sa.ZONE, zone), SearchAttributePair(sa.RISK, risk),
                SearchAttributePair(sa.PRIORITY, priority),
                SearchAttributePair(sa.CONFIDENCE, rng.random()),
                SearchAttributePair(sa.SLA_DEADLINE,
                                    now + timedelta(seconds=rng.randint(-600, 3600))),
            ]))

    for start in range(0, count, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 200, count))))


async def _visible(source: VisibilityQueue, size: int) -> None:
    """Visibility is eventually consistent: wait until every decision is listed."""
    for _ in range(600):
        if await source.count(QueueQuery()) >= size:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"visibility did not list {size} decisions")


async def bench_visibility(sizes: list[int]) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"), search_attributes=sa.ALL,
        data_converter=data_converter(), dev_server_log_level="error")
    try:
        hitl = HitlClient(env.client, task_queue="bench-no-worker")
        source = VisibilityQueue(hitl.temporal)
        created = 0
        print(f"{'pending':>8} {'first page':>11} {'escalate only':>14} {'count()':>8}  "
              "(median ms, visibility on the dev server's SQLite)")
        for size in sizes:
            await _create(hitl, size - created, created)
            created = size
            await _visible(source, size)
            first = await _timed(lambda: source.page(QueueQuery(limit=PAGE)))
            escalate = await _timed(
                lambda: source.page(QueueQuery(zone=Zone.ESCALATE, limit=PAGE)))
            counted = await _timed(lambda: source.count(QueueQuery()))
            print(f"{size:>8} {first:>11.1f} {escalate:>14.1f} {counted:>8.1f}")
    finally:
        await env.shutdown()


SCHEMA = """
CREATE TABLE review_queue (
    decision_id TEXT PRIMARY KEY, task_type TEXT NOT NULL, status TEXT NOT NULL,
    zone TEXT NOT NULL, risk TEXT NOT NULL, confidence REAL NOT NULL,
    priority INTEGER NOT NULL, sla_deadline TEXT NOT NULL, updated_at TEXT NOT NULL,
    waiting INTEGER NOT NULL);
CREATE INDEX ix_queue_order ON review_queue (status, priority, sla_deadline);
CREATE INDEX ix_queue_waiting ON review_queue (waiting, priority, sla_deadline);
CREATE INDEX ix_queue_zone ON review_queue (zone, waiting, priority, sla_deadline);
"""
# Two ways to say "waiting": the status list (two ranges of the status index, so
# the engine sorts), or one boolean column the index orders by directly.
BY_STATUS = "status IN ('pending_review', 'provisional')"
BY_FLAG = "waiting = 1"
PAGE_SQL = ("SELECT * FROM review_queue WHERE {waiting} {extra} "
            "ORDER BY priority, sla_deadline LIMIT {page} OFFSET {offset}")
COUNT_SQL = "SELECT count(*) FROM review_queue WHERE {waiting} {extra}"
CASES = (("first page (status IN)", BY_STATUS, "", 0), ("first page (waiting=1)", BY_FLAG, "", 0),
         ("escalate only", BY_FLAG, "AND zone='escalate'", 0),
         ("offset 5000", BY_FLAG, "", 5000))


def _rows(count: int, finished: int) -> list[tuple[Any, ...]]:
    rng = random.Random(7)
    now = datetime.now(UTC)
    rows = []
    for i in range(count + finished):
        zone, risk, priority = rng.choice(ZONES)
        status = "pending_review" if i < count else "executed"
        deadline = (now + timedelta(seconds=rng.randint(-600, 3600))).isoformat()
        rows.append((f"d-{i:06d}", "ticket_classification", status, zone, risk, rng.random(),
                     priority, deadline, now.isoformat(), int(i < count)))
    return rows


def _time_queries(execute: Callable[[str], list[Any]]) -> dict[str, float]:
    results = {}
    for name, waiting, extra, offset in CASES:
        sql = PAGE_SQL.format(waiting=waiting, extra=extra, page=PAGE, offset=offset)
        results[name] = _timed_sync(functools.partial(execute, sql))
    results["count()"] = _timed_sync(
        lambda: execute(COUNT_SQL.format(waiting=BY_FLAG, extra="")))
    return results


def _report(engine: str, rows: int, finished: int, results: dict[str, float]) -> None:
    print(f"{engine}, {rows} pending + {finished} finished rows: "
          + ", ".join(f"{name} {ms:.2f} ms" for name, ms in results.items()))


def bench_sqlite(rows: int, finished: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "queue.db")
        db.executescript(SCHEMA)
        db.executemany("INSERT INTO review_queue VALUES (?,?,?,?,?,?,?,?,?,?)",
                       _rows(rows, finished))
        db.commit()
        db.execute("ANALYZE")
        _report("SQLite", rows, finished, _time_queries(lambda sql: db.execute(sql).fetchall()))
        for label, waiting in (("status IN", BY_STATUS), ("waiting=1", BY_FLAG)):
            plan = db.execute("EXPLAIN QUERY PLAN " + PAGE_SQL.format(
                waiting=waiting, extra="", page=PAGE, offset=0)).fetchall()
            print(f"  plan ({label}):", "; ".join(str(row[-1]) for row in plan))
        db.close()


def bench_postgres(rows: int, finished: int) -> None:
    if not postgres_available():
        print("PostgreSQL: not reachable on 127.0.0.1:5432, skipped")
        return
    import psycopg

    url = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS review_queue")
        for statement in filter(str.strip, SCHEMA.split(";")):
            db.execute(statement)
        with db.cursor() as cursor:
            cursor.executemany("INSERT INTO review_queue VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                               _rows(rows, finished))
        db.execute("ANALYZE review_queue")
        _report("PostgreSQL", rows, finished,
                _time_queries(lambda sql: db.execute(sql).fetchall()))
        db.execute("DROP TABLE review_queue")


def _timed_sync(fn: Callable[[], Any], repeat: int = 20) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,1000,2000")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--finished", type=int, default=90_000,
                        help="closed decisions also in the table (history keeps growing)")
    args = parser.parse_args()
    asyncio.run(bench_visibility([int(s) for s in args.sizes.split(",")]))
    bench_sqlite(args.rows, args.finished)
    bench_postgres(args.rows, args.finished)


if __name__ == "__main__":
    main()
