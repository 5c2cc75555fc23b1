"""A benchmark worker in its own process: ``python -m hitl.bench.worker_proc KIND ...``.

``hitl`` runs the real worker (``worker.main.running_worker``, the function
``python -m worker`` runs) on the benchmark's SQLite store; ``baseline`` runs
the bare workflows of ``hitl.bench.baseline`` and the floor workflows of
``hitl.bench.floor``. A process each, so the harness reads each one's resident
memory and CPU time from ``/proc`` without counting its own client, and a
profiler can attach by PID. Writes ``ready`` on the ``--ready-fd`` pipe once
polling and stops on SIGTERM. Standard output is not a channel to the
harness: the SDK core writes its log lines there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from hitl.bench.baseline import BareSignalWorkflow, BareWorkflow, bare_touch
from hitl.bench.floor import FloorSignalWorkflow, FloorWorkflow, floor_step
from hitl.connection import data_converter
from hitl.policy import Policy, load_policy, parse_policy

# Review SLAs long enough that no timer fires while the benchmark holds
# decisions at the gate: the figures are about the gate, not about SLA expiry.
BENCH_SLA = {"queue": "6h", "escalate": "6h", "hard_deadline": "24h"}


def bench_policy() -> Policy:
    """The built-in policy with the SLAs of ``BENCH_SLA``."""
    data = load_policy().model_dump(mode="json")
    data["sla"] = dict(BENCH_SLA)
    return parse_policy(data, source="bench policy")


async def _serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    if args.kind == "hitl":
        from hitl.connection import connect
        from hitl.settings import Settings
        from hitl.store import make_engine
        from worker.main import running_worker

        settings = Settings(temporal_address=args.address, namespace=args.namespace,
                            task_queue=args.task_queue, data_dir=Path(args.data_dir))
        client = await connect(settings, for_worker=True)  # as `python -m worker` does
        engine = make_engine(settings.resolved_database_url())
        async with running_worker(client, settings, policy=bench_policy(), engine=engine):
            _ready(args.ready_fd)
            await stop.wait()
        engine.dispose()
        return
    client = await Client.connect(args.address, namespace=args.namespace,
                                  data_converter=data_converter())
    async with Worker(client, task_queue=args.task_queue,
                      workflows=[BareWorkflow, BareSignalWorkflow, FloorWorkflow,
                                 FloorSignalWorkflow],
                      activities=[bare_touch, floor_step]):
        _ready(args.ready_fd)
        await stop.wait()


def _ready(fd: int) -> None:
    os.write(fd, b"ready\n")
    os.close(fd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hitl.bench.worker_proc")
    parser.add_argument("kind", choices=["hitl", "baseline"])
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    args = parser.parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await _serve(args, stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
