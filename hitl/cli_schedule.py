"""``hitl schedule ensure|trigger|status``: the recalibration schedule from the shell.

``ensure`` creates or updates the schedule (``--cron`` or ``--every``, and the
recalibration's target and auto-apply bounds); ``trigger`` runs it now and,
with ``--wait``, prints the run's outcome; ``status`` shows the cadence, the
next runs and the recent ones. ``hitl/cli.py`` dispatches to ``run_schedule``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from pydantic import ValidationError

from hitl.durations import parse_duration
from hitl.errors import HitlError, InputError
from hitl.recalibration import RecalibrationBounds, RecalibrationConfig, RecalibrationResult
from hitl.schedules import (
    SCHEDULE_ID,
    RecalibrationSchedule,
    ensure_schedule,
    schedule_status,
    trigger_schedule,
)
from hitl.settings import Settings


def run_schedule(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 on success, 2 with one line on bad input, 1 if Temporal fails."""
    parser = _Parser(prog="hitl schedule", description=__doc__.splitlines()[0] if __doc__ else "")
    sub = parser.add_subparsers(dest="action", required=True)
    ensure = sub.add_parser("ensure", help="create or update the recalibration schedule")
    cadence = ensure.add_mutually_exclusive_group()
    cadence.add_argument("--cron", help="five-field cron in UTC (default: Mondays 03:00)")
    cadence.add_argument("--every", help="an interval instead: 7d, 12h, ...")
    ensure.add_argument("--lookback", default="90d", help="labels of the last ... (default 90d)")
    ensure.add_argument("--max-error", type=float, default=0.02,
                        help="target error among autonomous decisions (default 0.02)")
    ensure.add_argument("--delta", type=float, default=0.05)
    ensure.add_argument("--max-step", type=float, default=0.02,
                        help="largest threshold move applied without an operator (default 0.02)")
    ensure.add_argument("--no-auto-apply", action="store_true",
                        help="every change waits for an operator's approval")
    trigger = sub.add_parser("trigger", help="run the recalibration now")
    trigger.add_argument("--wait", action="store_true", help="wait for the run's outcome")
    trigger.add_argument("--timeout", type=float, default=None)
    status = sub.add_parser("status", help="cadence, next and recent runs")
    for command in (ensure, trigger, status):
        command.add_argument("--id", default=SCHEDULE_ID, help=f"schedule ID ({SCHEDULE_ID})")
        command.add_argument("--json", action="store_true", help="machine-readable output")
    try:
        args = parser.parse_args(argv)
        settings = Settings()
        lines, data = asyncio.run(_run(args, settings))
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except (InputError, ValidationError) as exc:
        message = str(exc) if isinstance(exc, InputError) else _validation(exc)
        print(f"hitl schedule: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    except (HitlError, RuntimeError) as exc:
        print(f"hitl schedule: error: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2, default=str) if args.json else "\n".join(lines))
    return 0


async def _run(args: argparse.Namespace, settings: Settings) -> tuple[list[str], Any]:
    from hitl.connection import connect

    if args.action == "ensure":
        config = _config(args)  # bad input fails before connecting
        client = await connect(settings)
        outcome = await ensure_schedule(client, task_queue=settings.task_queue, config=config)
        return ([f"{config.schedule_id}\t{outcome}\t{config.cadence}\ttask queue "
                 f"{settings.task_queue}"],
                {"schedule_id": config.schedule_id, "outcome": outcome,
                 "cadence": config.cadence, "config": config.model_dump(mode="json")})
    client = await connect(settings)
    if args.action == "trigger":
        run_id = await trigger_schedule(client, args.id)
        if run_id is None:
            return ([f"{args.id}\tskipped: a run is still going (see hitl schedule status)"],
                    {"workflow_id": None, "skipped": True})
        if not args.wait:
            return [f"{args.id}\tstarted {run_id}"], {"workflow_id": run_id}
        handle = client.get_workflow_handle(run_id, result_type=RecalibrationResult)
        result = await asyncio.wait_for(handle.result(), args.timeout)
        return ([f"{run_id}\t{result.outcome.value}\tversion {result.version or '-'}\t"
                 f"{result.feedback.labels} labels ({result.feedback.reviews_used} reviews)"
                 + (f"\tgate {result.gate_id}: {result.gate_status}" if result.gate_id else "")],
                {"workflow_id": run_id, **result.model_dump(mode="json")})
    state = await schedule_status(client, args.id)
    lines = [f"schedule   {state.schedule_id} ({'paused' if state.paused else 'active'})",
             f"cadence    {state.cadence}"]
    lines += [f"next       {moment:%Y-%m-%d %H:%M} UTC" for moment in state.next_runs]
    lines += [f"run        {run.workflow_id}  "
              f"{f'{run.started_at:%Y-%m-%d %H:%M} UTC' if run.started_at else ''}"
              + ("  running" if run.running else "") for run in state.runs]
    return lines, state.model_dump(mode="json")


def _config(args: argparse.Namespace) -> RecalibrationSchedule:
    every = _seconds(args.every, "--every") if args.every else None
    return RecalibrationSchedule.model_validate({
        "schedule_id": args.id, "every": every, **({"cron": args.cron} if args.cron else {}),
        "recalibration": RecalibrationConfig(
            max_error=args.max_error, delta=args.delta,
            lookback_days=_seconds(args.lookback, "--lookback") / 86400,
            bounds=RecalibrationBounds(auto_apply=not args.no_auto_apply,
                                       max_step=args.max_step))})


def _seconds(text: str, flag: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise InputError(f"{flag}: {exc}", field=flag) from None


def _validation(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(root)"
    return f"{field}: {first['msg']}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise InputError(message)
