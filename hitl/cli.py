"""``hitl``: run the stack, submit decisions, review them, inspect the queue.

Exit codes: 0 success, 2 bad input or an unknown/closed/conflicting decision
(one line on stderr, nothing written), 3 ``submit --wait --timeout`` ran out
while the decision is still running (it goes on), 1 anything else (Temporal
unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from hitl.enums import Verdict
from hitl.errors import HitlError, InputError
from hitl.input_files import read_text
from hitl.limits import MAX_BODY_BYTES
from hitl.request import Action, DecisionRequest
from hitl.review import ApproveInput, RejectInput
from hitl.settings import Settings

if TYPE_CHECKING:
    from hitl.client import HitlClient, QueueItem
    from hitl.state import DecisionState

EXIT_BAD_INPUT = 2
MAX_TOKEN_FILE_BYTES = 4096  # a token is about 50 characters
EXIT_STILL_RUNNING = 3


class StillRunning(HitlError):
    """``submit --wait --timeout`` ran out first. Not a failure of the decision
    (durable, it goes on), so it gets its own exit code: a script can tell "wait
    longer" from "fix the input" (2) and "Temporal is down" (1)."""


def _emit(value: BaseModel | list[Any] | dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        if isinstance(value, BaseModel):
            print(value.model_dump_json(indent=2))
        else:
            print(json.dumps(value, indent=2, default=str))
    else:
        print(text)


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(root)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{field}: {first['msg']}{more}"


def _read_request(source: str) -> DecisionRequest:
    text = read_text(source, max_bytes=MAX_BODY_BYTES, what="a decision request",
                     stream=sys.stdin.buffer if source == "-" else None)
    try:
        return DecisionRequest.model_validate_json(text)
    except ValidationError as exc:
        raise InputError(f"invalid decision request: {_validation_message(exc)}") from exc


# ------------------------------------------------------------------ commands

async def _submit(args: argparse.Namespace, settings: Settings) -> None:
    from hitl.client import HitlClient

    request = _read_request(args.file)
    hitl = await HitlClient.connect(settings)
    submission = await hitl.submit(request)
    if args.wait:
        try:
            state = await hitl.wait(request.decision_id, timeout=args.timeout)
        except TimeoutError:
            raise StillRunning(await _still_running(hitl, request.decision_id, args.timeout)
                               ) from None
    else:
        state = await hitl.status(request.decision_id)
        for _ in range(50):  # screening takes milliseconds; show the zone when known
            if state.zone is not None:
                break
            await asyncio.sleep(0.1)
            state = await hitl.status(request.decision_id)
    attached = " (already submitted)" if submission.attached else ""
    _emit(state, args.json, f"{state.decision_id}\tzone={state.zone.value if state.zone else '-'}"
          f"\tstatus={state.status.value}{attached}")


async def _still_running(client: HitlClient, decision_id: str, waited: float) -> str:
    """The line for a wait that ran out. The status comes from the workflow's
    ``HitlStatus`` search attribute (one describe, answered without a worker) and
    is left out if even that does not answer promptly: the line must not wait."""
    from temporalio.service import RPCError

    from hitl import search_attributes as sa

    status = ""
    try:
        description = await asyncio.wait_for(
            client.temporal.get_workflow_handle(decision_id).describe(), 2.0)
        current = description.typed_search_attributes.get(sa.STATUS)
        status = f" (status {current})" if current else ""
    except (TimeoutError, RPCError):
        pass
    return (f"decision {decision_id} not finished after {waited:g}s{status}; "
            f"it goes on: hitl status {decision_id}")


async def _status(args: argparse.Namespace, settings: Settings) -> None:
    from hitl.client import HitlClient

    state = await (await HitlClient.connect(settings)).status(args.decision_id)
    lines = [f"decision   {state.decision_id} ({state.task_type})",
             f"status     {state.status.value}",
             f"zone       {state.zone.value if state.zone else '-'}   risk "
             f"{state.risk.value if state.risk else '-'}   confidence {state.confidence:.3f}"]
    if state.routing:
        lines += [f"why        {reason}" for reason in state.routing.reasons]
    if state.sla_deadline:
        lines.append(f"sla        {state.sla_deadline.isoformat()}"
                     + ("  OVERDUE" if state.overdue else ""))
    lines += [f"review     {r.verdict.value} by {r.reviewer}: {r.reason}"
              + ("" if r.accepted else f"  [refused: {r.refusal}]") for r in state.reviews]
    if state.refused > len([r for r in state.reviews if not r.accepted]):
        lines.append(f"refused    {state.refused} reviewer actions in all (the first few shown)")
    lines += [f"delivery   {d.phase.value} via {d.executor} at {d.at.isoformat()}"
              for d in state.deliveries]
    lines += _content_lines(state)
    _emit(state, args.json, "\n".join(lines))


def _content_lines(state: DecisionState) -> list[str]:
    """The content up for approval, with the digest ``hitl approve --digest`` names."""
    from hitl.content import diff

    current = state.up_for_approval
    if current is None or not state.status.is_open:
        return []
    who = f"edit by {current.edited_by}" if current.edited_by else "the model's proposal"
    lines = [f"content    sha256:{current.sha256}  ({who}; approve it with "
             f"--digest {current.sha256[:16]})"]
    if state.edit is not None and state.proposal is not None:
        lines += [f"  {line}" for line in diff(state.proposal, state.edit)]
    else:
        lines += [f"output     {line}" for line in current.output.splitlines()[:20]]
        lines.append(f"action     {current.action.model_dump_json()}")
    return lines


def _token(args: argparse.Namespace, settings: Settings) -> str:
    """The reviewer's token: ``--token-file``, else ``HITL_REVIEWER_TOKEN``. Never a
    flag's value, which shells keep in their history and ``ps`` shows."""
    if args.token_file:
        token = read_text(args.token_file, max_bytes=MAX_TOKEN_FILE_BYTES,
                          what="reviewer token", field="--token-file").strip()
    elif settings.reviewer_token is not None:
        token = settings.reviewer_token.get_secret_value().strip()
    else:
        raise InputError("a reviewer token is needed to sign: set HITL_REVIEWER_TOKEN or pass "
                         "--token-file (hitl reviewers add|rotate prints one)", field="token")
    if not token:
        raise InputError("the reviewer token is empty", field="token")
    return token


async def _verdict(args: argparse.Namespace, settings: Settings, verdict: Verdict,
                   review: ApproveInput | RejectInput) -> None:
    """Name the content (``--digest``, a prefix of at least 16 characters expanded
    against the decision's content now), sign, then send, or print for the temporal CLI."""
    from hitl import proofs
    from hitl.client import HitlClient

    token = _token(args, settings)
    digest = args.digest.removeprefix("sha256:").lower()
    if not (16 <= len(digest) <= 64 and all(c in "0123456789abcdef" for c in digest)):
        raise InputError("--digest: the content's sha256 (hitl status ID shows it), at "
                         "least its first 16 hex characters", field="--digest")
    hitl = None
    if len(digest) < 64:
        hitl = await HitlClient.connect(settings)
        current = await hitl.content(args.decision_id)
        if not current.sha256.startswith(digest):
            raise InputError(f"--digest: the content up for approval is sha256:"
                             f"{current.sha256[:16]}..., not {digest}: look again "
                             f"(hitl status {args.decision_id})", field="--digest")
        digest = current.sha256
    lifetime = _lifetime(args.valid_for)
    signed = proofs.sign(review.model_copy(update={"content_sha256": digest}),
                         decision_id=args.decision_id, verdict=verdict, token=token,
                         lifetime=lifetime)
    if args.sign_only:
        payload = signed.model_dump_json(exclude_none=True)
        print(payload)
        print(f"send it within {lifetime}: temporal workflow update execute --workflow-id "
              f"{args.decision_id} --name {verdict.value} --input '<the line above>'",
              file=sys.stderr)
        return
    hitl = hitl or await HitlClient.connect(settings)
    ack = await (hitl.approve(args.decision_id, signed) if isinstance(signed, ApproveInput)
                 else hitl.reject(args.decision_id, signed))
    _emit(ack, args.json, f"{args.decision_id}\t{ack.message}")


def _lifetime(text: str) -> timedelta:
    from hitl.durations import parse_duration
    from hitl.proofs import MAX_LIFETIME

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise InputError(f"--valid-for: {exc}", field="--valid-for") from None
    if not 0 < seconds <= MAX_LIFETIME.total_seconds():
        raise InputError(f"--valid-for: between 1s and {MAX_LIFETIME}", field="--valid-for")
    return timedelta(seconds=seconds)


async def _approve(args: argparse.Namespace, settings: Settings) -> None:
    action = _read_action(args.action_file) if args.action_file else None
    review = _model(ApproveInput, reviewer=args.reviewer, reason=args.reason,
                    output=args.output, action=action, flag_for_monitoring=args.flag,
                    request_id=args.request_id or str(uuid.uuid4()))
    await _verdict(args, settings, Verdict.APPROVE, review)


async def _reject(args: argparse.Namespace, settings: Settings) -> None:
    review = _model(RejectInput, reviewer=args.reviewer, reason=args.reason,
                    correct_answer=args.correct, error_category=args.category,
                    request_id=args.request_id or str(uuid.uuid4()))
    await _verdict(args, settings, Verdict.REJECT, review)


def _read_action(source: str) -> Action:
    text = read_text(source, max_bytes=MAX_BODY_BYTES, what="action", field="--action-file")
    try:
        return Action.model_validate_json(text)
    except ValidationError as exc:
        raise InputError(f"--action-file: {_validation_message(exc)}",
                         field="--action-file") from None


async def _queue(args: argparse.Namespace, settings: Settings) -> None:
    if args.source == "temporal":
        from hitl.client import HitlClient

        items = await (await HitlClient.connect(settings)).pending(
            zone=args.zone, risk=args.risk, task_type=args.task_type, limit=args.limit)
    else:
        items = await asyncio.to_thread(_queue_from_store, args, settings)
    rows = [f"{'decision':<28}{'task type':<24}{'zone':<11}{'risk':<10}{'conf':>6}  sla"]
    for item in items:
        sla = item.sla_deadline.strftime("%H:%M:%S") if item.sla_deadline else "-"
        rows.append(f"{item.decision_id:<28}{item.task_type or '-':<24}{item.zone or '-':<11}"
                    f"{item.risk or '-':<10}{item.confidence or 0:>6.2f}  {sla}"
                    + ("  OVERDUE" if item.overdue else "")
                    + ("  provisional" if item.status == "provisional" else ""))
    _emit([i.model_dump(mode="json") for i in items], args.json,
          "\n".join(rows) + f"\n{len(items)} waiting")


def _queue_from_store(args: argparse.Namespace, settings: Settings) -> list[QueueItem]:
    """The ``review_queue`` table the workflow keeps current: one indexed query
    a page (milliseconds at 10,000 pending, where visibility takes seconds)."""
    from sqlmodel import Session

    from hitl.review_queue import as_queue_item, waiting_page
    from hitl.store import init_store, make_engine

    engine = make_engine(settings.resolved_database_url())
    init_store(engine)
    now = datetime.now(UTC)
    with Session(engine) as session:
        rows, _total = waiting_page(session=session, now=now, zone=args.zone, risk=args.risk,
                                    task_type=args.task_type, limit=args.limit)
    return [as_queue_item(row, now) for row in rows]


async def _worker(args: argparse.Namespace, settings: Settings) -> None:
    from hitl.logs import configure_logging
    from worker.main import run_worker

    configure_logging()
    await run_worker(settings)


async def _up(args: argparse.Namespace, settings: Settings) -> None:
    from hitl.cli_up import run_up

    await run_up(settings, temporal_port=args.temporal_port, ui_port=args.ui_port,
                 demo=args.demo, demo_count=args.demo_count, demo_interval=args.demo_interval,
                 api_port=args.api_port, ui_write_actions=args.ui_write_actions)


async def _serve(args: argparse.Namespace, settings: Settings) -> None:
    try:
        from hitl.api.server import run_server
    except ImportError as exc:
        raise HitlError(f"hitl serve needs the api extra: pip install 'hitl[api]' ({exc})"
                        ) from exc
    from hitl.logs import configure_logging

    configure_logging()
    await run_server(settings, host=args.host, port=args.port, on_ready=lambda url: print(
        f"hitl API and review page on {url}  (OpenAPI: {url}/openapi.json)", flush=True))


async def _policy(args: argparse.Namespace, settings: Settings) -> None:
    from hitl.policy import load_policy

    policy = load_policy(Path(args.file) if args.file else settings.policy)
    _emit(policy.model_dump(mode="json"), args.json, f"ok\t{policy.full_version}")


async def _reviewers(args: argparse.Namespace, settings: Settings) -> None:
    from sqlmodel import Session

    from hitl import reviewers
    from hitl.store import init_store, make_engine

    engine = make_engine(settings.resolved_database_url())
    init_store(engine)
    with Session(engine) as session:
        if args.action in ("add", "rotate"):
            lifetime = _token_lifetime(session, settings)
            if args.action == "add":
                reviewer, token = reviewers.add_reviewer(
                    session=session, name=args.name, risks=reviewers.parse_risks(args.risks),
                    lifetime=lifetime)
            else:
                reviewer, token = reviewers.rotate_token(session=session, name=args.name,
                                                         lifetime=lifetime)
            expires = (reviewer.token_expires_at.isoformat() if reviewer.token_expires_at
                       else "never")
            _emit({"name": reviewer.name, "risks": reviewer.risks, "token": token,
                   "expires_at": expires}, args.json,
                  f"{reviewer.name}\trisks={reviewer.risks}\ttoken={token}\texpires={expires}\n"
                  "(the token is shown once; it is stored only as a hash"
                  + ("; the previous one no longer works)" if args.action == "rotate" else ")"))
        elif args.action in ("disable", "enable"):
            reviewer = reviewers.set_active(session=session, name=args.name,
                                            active=args.action == "enable")
            _emit({"name": reviewer.name, "active": reviewer.active}, args.json,
                  f"{reviewer.name}\tactive={reviewer.active}")
        else:
            rows = reviewers.list_reviewers(session=session)
            _emit([{"name": r.name, "risks": r.risks, "active": r.active} for r in rows],
                  args.json, "\n".join(f"{r.name}\t{r.risks}\t{'active' if r.active else 'off'}"
                                        for r in rows) or "no reviewers")


async def _audits(args: argparse.Namespace, settings: Settings) -> None:
    from sqlmodel import Session

    from hitl import audits
    from hitl.enums import ErrorCategory, Verdict
    from hitl.store import init_store, make_engine

    engine = make_engine(settings.resolved_database_url())
    init_store(engine)
    with Session(engine) as session:
        if args.action == "pending":
            rows = audits.pending_audits(session=session, limit=args.limit)
            _emit([r.model_dump(mode="json") for r in rows], args.json,
                  "\n".join(f"{r.decision_id}\t{r.task_type}\t{r.risk}\t{r.confidence:.2f}"
                            for r in rows) or "no sampled audits waiting")
            return
        try:
            verdict = Verdict(args.verdict)
            category = ErrorCategory(args.category) if args.category else None
        except ValueError as exc:
            raise InputError(f"{exc}", field="verdict") from None
        row = audits.record_audit_verdict(session=session, decision_id=args.decision_id,
                                          reviewer=args.reviewer, verdict=verdict,
                                          error_category=category)
        _emit(row.model_dump(mode="json"), args.json,
              f"{row.decision_id}\taudit {row.verdict} by {row.reviewer}")


def _token_lifetime(session: Any, settings: Settings) -> timedelta | None:
    """The active policy's ``review.token_lifetime`` (a stored version, else the file)."""
    from hitl import policy_versions
    from hitl.policy import load_policy

    row = policy_versions.active(session)
    policy = policy_versions.policy_of(row) if row else load_policy(settings.policy)
    seconds = policy.review.token_lifetime
    return timedelta(seconds=seconds) if seconds > 0 else None


def _model(cls: type[BaseModel], **values: Any) -> Any:
    try:
        return cls.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise InputError(_validation_message(exc)) from exc


# -------------------------------------------------------------------- parser

def _page_size(text: str) -> int:
    """A ``--limit``: past ``MAX_OFFSET`` a store's integer overflows (a traceback)."""
    from hitl.limits import MAX_OFFSET

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_OFFSET:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_OFFSET}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hitl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start Temporal (dev server), the worker and a demo stream")
    up.add_argument("--temporal-port", type=int, default=7233)
    up.add_argument("--ui-port", type=int, default=8233)
    up.add_argument("--demo", action=argparse.BooleanOptionalAction, default=False,
                    help="submit a stream of realistic demo decisions")
    up.add_argument("--demo-count", type=int, default=40)
    up.add_argument("--demo-interval", type=float, default=0.5)
    up.add_argument("--api-port", type=int, default=8000,
                    help="port of the HTTP API and review page on 127.0.0.1")
    up.add_argument("--ui-write-actions", action="store_true",
                    help="let the Temporal UI signal, update, reset, cancel and terminate "
                         "workflows (by default it is served read-only)")
    up.set_defaults(run=_up)

    serve = sub.add_parser("serve", help="run the HTTP API and the review page")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=_serve)

    sub.add_parser("worker", help="run a worker against HITL_TEMPORAL_ADDRESS").set_defaults(
        run=_worker)

    submit = sub.add_parser("submit", help="submit a decision request (JSON file or -)")
    submit.add_argument("file")
    submit.add_argument("--wait", action="store_true", help="wait for the outcome")
    submit.add_argument("--timeout", type=float, default=None,
                        help="seconds --wait waits at most; if the decision is still "
                             f"running then, exit {EXIT_STILL_RUNNING} with one line on "
                             "stderr (the decision goes on: hitl status ID)")
    submit.set_defaults(run=_submit, json_flag=True)

    status = sub.add_parser("status", help="a decision's full state")
    status.add_argument("decision_id")
    status.set_defaults(run=_status)

    approve = sub.add_parser("approve", help="approve a decision (optionally edited)")
    approve.add_argument("decision_id")
    approve.add_argument("--reviewer", required=True)
    approve.add_argument("--reason", default="")
    approve.add_argument("--output", help="edited output to deliver instead")
    approve.add_argument("--action-file", help="edited action (JSON file) to run instead")
    approve.add_argument("--flag", action="store_true", help="let through, flag for monitoring")
    approve.add_argument("--request-id")
    approve.set_defaults(run=_approve)

    reject = sub.add_parser("reject", help="reject a decision with feedback")
    reject.add_argument("decision_id")
    reject.add_argument("--reviewer", required=True)
    reject.add_argument("--reason", required=True)
    reject.add_argument("--correct", help="the correct answer")
    reject.add_argument("--category", default="other", help="error category")
    reject.add_argument("--request-id")
    reject.set_defaults(run=_reject)
    for verdict in (approve, reject):
        verdict.add_argument("--digest", required=True,
                             help="the sha256 of the content you reviewed, as hitl status "
                                  "shows it (its first 16 characters suffice)")
        verdict.add_argument("--token-file", help="file holding your reviewer token "
                             "(default: HITL_REVIEWER_TOKEN)")
        verdict.add_argument("--valid-for", default="10m",
                             help="how long the signed action may be sent (at most 24h)")
        verdict.add_argument("--sign-only", action="store_true",
                             help="print the signed payload for temporal workflow "
                                  "update|signal instead of sending it")

    queue = sub.add_parser("queue", help="decisions waiting for review, most urgent first")
    queue.add_argument("--zone")
    queue.add_argument("--risk")
    queue.add_argument("--task-type")
    queue.add_argument("--limit", type=_page_size, default=100)
    queue.add_argument("--source", choices=("store", "temporal"), default="store",
                       help="the store's review_queue table (fast; default) or Temporal "
                            "visibility (search attributes; reads every match)")
    queue.set_defaults(run=_queue)

    reviewers = sub.add_parser("reviewers", help="manage reviewers and their roles")
    reviewers_sub = reviewers.add_subparsers(dest="action", required=True)
    add = reviewers_sub.add_parser("add", help="create a reviewer; prints its token once")
    add.add_argument("name")
    add.add_argument("--risks", default="low,medium",
                     help="risk levels this reviewer may decide: e.g. low,medium,high or all")
    rotate = reviewers_sub.add_parser("rotate", help="issue a new token; the old one stops "
                                      "working at once")
    rotate.add_argument("name")
    toggles = [reviewers_sub.add_parser(action) for action in ("disable", "enable")]
    for toggle in toggles:
        toggle.add_argument("name")
    listing = reviewers_sub.add_parser("list")
    reviewers.set_defaults(run=_reviewers)

    audits = sub.add_parser("audits", help="after-the-fact review of sampled AUTO_AUDIT decisions")
    audits_sub = audits.add_subparsers(dest="action", required=True)
    audit_pending = audits_sub.add_parser("pending", help="sampled audits waiting for a verdict")
    audit_pending.add_argument("--limit", type=_page_size, default=100)
    audit_review = audits_sub.add_parser("review", help="record an auditor's verdict")
    audit_review.add_argument("decision_id")
    audit_review.add_argument("--reviewer", required=True)
    audit_review.add_argument("--verdict", required=True, choices=["approve", "reject"])
    audit_review.add_argument("--category", help="error category (required for reject)")
    audits.set_defaults(run=_audits)
    # Listed for --help only: main() hands "audit" to hitl.cli_audit before parsing.
    sub.add_parser("audit", help="verify the audit trail's hash chains: hitl audit verify")

    # Listed for --help only: main() hands "schedule" to hitl.cli_schedule before parsing.
    sub.add_parser("schedule", help="the recalibration schedule: ensure | trigger | status")
    policy = sub.add_parser("policy", help="validate a policy file (built-in when omitted); "
                            "hitl policy versions|show|activate|rollback manage stored versions",
                            description="Validate a policy file. Stored versions: hitl policy "
                            "check|versions|show|propose|activate|reject|rollback (each with "
                            "--help).")
    policy.add_argument("file", nargs="?")
    policy.set_defaults(run=_policy)

    for command in (submit, status, approve, reject, queue, policy, add, rotate, listing,
                    *toggles, audit_pending, audit_review):
        command.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for position, arg in enumerate(argv, start=1):
        # Python hands undecodable bytes in argv over as lone surrogates, which fail
        # later, deep in a serializer; say so now, for every command.
        if not arg.isascii() and not _utf8(arg):
            print(f"hitl: error: argument {position} is not UTF-8 text", file=sys.stderr)
            return EXIT_BAD_INPUT
    if argv[:1] == ["calibrate"]:
        from hitl.cli_calibrate import run_calibrate

        return run_calibrate(argv[1:])
    if argv[:1] == ["metrics"]:
        from hitl.cli_metrics import run_metrics

        return run_metrics(argv[1:])
    if argv[:1] == ["audit"]:
        from hitl.cli_audit import run_audit

        return run_audit(argv[1:])
    if argv[:1] == ["export"]:
        from hitl.cli_export import run_export

        return run_export(argv[1:])
    if argv[:1] == ["schedule"]:
        from hitl.cli_schedule import run_schedule

        return run_schedule(argv[1:])
    if argv[:1] == ["policy"] and argv[1:2] and argv[1] in ("check", "versions", "show",
                                                            "propose", "activate", "reject",
                                                            "rollback"):
        from hitl.cli_policy import run_policy

        return run_policy(argv[1:])
    if argv[:1] == ["bench"]:
        from hitl.bench.cli import run_bench

        return run_bench(argv[1:], watchdog=True)
    args = build_parser().parse_args(argv)
    if not hasattr(args, "json"):
        args.json = False
    try:
        settings = Settings()
        runner: Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, None]] = args.run
        asyncio.run(runner(args, settings))
    except StillRunning as exc:
        print(f"hitl: {exc}", file=sys.stderr)
        return EXIT_STILL_RUNNING
    except (HitlError, ValidationError) as exc:
        message = _validation_message(exc) if isinstance(exc, ValidationError) else str(exc)
        print(f"hitl: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT if not isinstance(exc, HitlError) or _is_input(exc) else 1
    except KeyboardInterrupt:
        return 130
    return 0


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _is_input(exc: HitlError) -> bool:
    from hitl.errors import DecisionClosed, DecisionConflict, DecisionNotFound

    return isinstance(exc, InputError | DecisionNotFound | DecisionConflict | DecisionClosed)


def entry() -> None:
    """Console entry point. Exits with ``os._exit`` after flushing: the Temporal
    core runtime can abort during interpreter finalization after a failed
    connection, which would turn a clean exit code into 134."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
