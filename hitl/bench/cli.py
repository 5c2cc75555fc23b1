"""``hitl bench``: run the benchmark, print the table, write JSON and Markdown.

    hitl bench --quick                       # CI size: well under a minute
    hitl bench                               # 2,000 decisions, 10,000 pending (~10 min)
    hitl bench --markdown docs/BENCHMARKS.md --json-out bench.json

Exit codes: 0 when every decision executed (targets are reported, not
enforced), 1 when the benchmark could not run or a decision went astray, 2 on
bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hitl.bench import report, runner, scale, scenarios
from hitl.bench.harness import BenchError, Harness
from hitl.bench.machine import machine_info
from hitl.bench.runner import BenchConfig
from hitl.devserver import find_binary
from hitl.errors import HitlError

PHASES = ("hot", "auto", "gate", "pending")
QUICK = BenchConfig(decisions=120, concurrency=16, gate_decisions=30, gate_concurrency=8,
                    pending=200, rounds=1, warmup=20, probe=10, queue_samples=10,
                    hot_seconds=0.2)
FULL = BenchConfig()
TEARDOWN_GRACE = 90.0  # seconds after the figures are out; the server stop alone has 30


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hitl bench",
                                     description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for CI (overridable by the flags below)")
    parser.add_argument("-n", "--decisions", type=int, help="autonomous decisions (2000)")
    parser.add_argument("--concurrency", type=int, help="in-flight operations (32)")
    parser.add_argument("--gate", type=int, dest="gate_decisions",
                        help="gated decisions approved for the latency figures (200)")
    parser.add_argument("--gate-concurrency", type=int, help="approvals in flight (8)")
    parser.add_argument("--pending", type=int,
                        help="decisions waiting at once; memory is also read at half (10000)")
    parser.add_argument("--rounds", type=int, help="alternating hitl/baseline rounds (2)")
    parser.add_argument("--only", default=",".join(PHASES),
                        help=f"comma-separated phases to run, of {','.join(PHASES)}")
    parser.add_argument("--json-out", type=Path, help="write every figure as JSON")
    parser.add_argument("--markdown", type=Path,
                        help="replace the generated block of this Markdown file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def config_from(args: argparse.Namespace) -> BenchConfig:
    base = QUICK if args.quick else FULL
    config = BenchConfig(**{**base.__dict__, "phases": set(base.phases)})
    for name in ("decisions", "concurrency", "gate_decisions", "gate_concurrency", "pending",
                 "rounds"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
            setattr(config, name, value)
    phases = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = phases - set(PHASES)
    if unknown or not phases:
        raise ValueError(f"--only: unknown phases {sorted(unknown)}; choose from {PHASES}")
    config.phases = phases
    config.progress = not args.no_progress
    return config


async def run(config: BenchConfig, results: dict[str, Any], *, temporal_binary: str,
              measured: Callable[[Harness | None], None] = lambda _: None) -> None:
    """Every selected phase into ``results``; the pure functions first, while the
    machine is quiet. A phase that fails records ``error`` and ends the run, so
    the figures of the phases before it are still reported."""
    if "hot" in config.phases:
        from hitl.bench.worker_proc import bench_policy

        results["hot"] = scenarios.hot_functions(bench_policy(), min_seconds=config.hot_seconds)
        results["calibration"] = scenarios.calibration()
    if not config.phases & {"auto", "gate", "pending"}:
        return
    tag = runner.new_tag()
    async with Harness(temporal_binary) as harness:
        phases = (("auto", "autonomous", runner.autonomous), ("gate", "gate", runner.gate),
                  ("pending", "pending", scale.pending))
        for phase, key, measure in phases:
            if phase not in config.phases:
                continue
            try:
                results[key] = await measure(harness, config, tag)
            except (BenchError, TimeoutError) as exc:
                results["error"] = f"{key}: {exc}"
                break
        results["checks"] = _checks(results, ledger_rows=harness.ledger_rows())
        measured(harness)  # before the teardown: a full run once hung in it, unprinted


def _checks(results: dict[str, Any], *, ledger_rows: int) -> dict[str, Any]:
    """Did every hitl decision execute exactly once? (Correctness, not speed.)"""
    expected, failures = 0, []
    if auto := results.get("autonomous"):
        expected += auto["warmup"] + auto["decisions"]
        if auto["hitl"]["completed"] != auto["decisions"]:
            failures.append(f"autonomous: {auto['hitl']['error_samples']}")
    if gate := results.get("gate"):
        expected += gate["decisions"]
        if gate["hitl"]["completed"] != gate["decisions"]:
            failures.append(f"gate: {gate['hitl']['error_samples']}")
    if scale := results.get("pending"):
        expected += scale["pending"]
        if scale["executed"] != scale["pending"]:
            failures.append(f"pending: {scale['executed']} of {scale['pending']} executed")
    if ledger_rows != expected:
        failures.append(f"ledger has {ledger_rows} executions, expected {expected}")
    return {"expected_executions": expected, "ledger_rows": ledger_rows,
            "all_executed": not failures, "failures": failures}


def run_bench(argv: list[str], *, watchdog: bool = False) -> int:
    """Run, then print and write the figures. They go out as soon as the last phase is
    measured, before the dev server and workers are torn down; with ``watchdog`` (the
    command line, not an in-process caller) a teardown that hangs ends the process
    with the run's exit code after ``TEARDOWN_GRACE`` seconds."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from(args)
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        sys.stderr.write(f"hitl bench: error: {exc}\n")
        return 2
    measured: dict[str, Any] = {}
    codes: list[int] = []
    timers: list[threading.Timer] = []
    started = time.perf_counter()

    def publish(harness: Harness | None) -> None:
        if codes:
            return
        codes.append(_publish(args, argv, config, machine, measured, started))
        if watchdog and harness is not None:
            timer = threading.Timer(TEARDOWN_GRACE, _abandon_teardown,
                                    args=(codes[0], harness.server_pid))
            timer.daemon = True
            timer.start()
            timers.append(timer)

    try:
        binary = str(find_binary("temporal"))
        machine = machine_info(binary)  # before any phase runs, so publish can use it
        asyncio.run(run(config, measured, temporal_binary=binary, measured=publish))
    except (BenchError, HitlError, TimeoutError) as exc:
        sys.stderr.write(f"hitl bench: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        for timer in timers:
            timer.cancel()
    publish(None)  # runs with no server phase ("--only hot") reach here unpublished
    return codes[0]


def _abandon_teardown(code: int, server_pid: int | None) -> None:
    sys.stderr.write(f"hitl bench: teardown did not finish in {TEARDOWN_GRACE:.0f} s; "
                     "exiting (the figures above are complete)\n")
    if server_pid:  # a hung teardown once left a 1.5 GB dev server running
        with contextlib.suppress(ProcessLookupError):
            os.kill(server_pid, signal.SIGKILL)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _publish(args: argparse.Namespace, argv: list[str], config: BenchConfig,
             machine: dict[str, Any], measured: dict[str, Any], started: float) -> int:
    """Print the table, write JSON and Markdown; the exit code the figures call for."""
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "command": "hitl bench " + " ".join(argv),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "config": {k: v for k, v in config.__dict__.items() if k not in ("progress", "phases")}
        | {"phases": sorted(config.phases)},
        "machine": machine,
        **measured,
    }
    sys.stdout.write(report.table(results) + "\n")
    sys.stdout.flush()
    if args.json_out:
        report.write_json(args.json_out, results)
    if args.markdown:
        report.write_markdown(args.markdown, results)
    if "error" in results:
        sys.stderr.write(f"hitl bench: error: {results['error']}\n")
        return 1
    checks = results.get("checks", {"all_executed": True})
    if not checks["all_executed"]:
        sys.stderr.write(f"hitl bench: not every decision executed: {checks['failures']}\n")
        return 1
    return 0
