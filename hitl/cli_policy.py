"""``hitl policy``: validate a policy file, and manage the stored policy versions.

``hitl policy [FILE]`` and ``hitl policy check [FILE]`` validate (the built-in
policy when FILE is omitted). The rest work on the store that workers read the
active version from (``hitl.policy_versions``); a change reaches every worker
within its refresh interval (10 s by default):

    hitl policy versions                      every stored version, newest first
    hitl policy show VERSION                  one version: status, body, proposal
    hitl policy propose FILE --by NAME        store a file as a proposed version
    hitl policy activate VERSION --by NAME    apply it (retires the active one)
    hitl policy reject VERSION --by NAME      record that it must not be applied
    hitl policy rollback --by NAME            re-activate the previously active one

Activations name who made them (``--by``), recorded as ``activated_by``.
``hitl/cli.py`` hands these subcommands to ``run_policy``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from hitl.errors import HitlError, InputError

if TYPE_CHECKING:
    from hitl.policy_versions import PolicyVersionRow

SUBCOMMANDS = ("check", "versions", "show", "propose", "activate", "reject", "rollback")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hitl policy", description=__doc__.splitlines()[0] if __doc__ else "")
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="validate a policy file (built-in when omitted)")
    check.add_argument("file", nargs="?")
    sub.add_parser("versions", help="stored policy versions, newest first")
    show = sub.add_parser("show", help="one stored version with its policy and proposal")
    show.add_argument("version")
    propose = sub.add_parser("propose", help="store a policy file as a proposed version")
    propose.add_argument("file")
    propose.add_argument("--by", required=True, help="who proposes it (recorded in the proposal)")
    propose.add_argument("--note")
    for name, text in (("activate", "apply a stored version on every worker"),
                       ("reject", "record that a proposed version must not be applied")):
        command = sub.add_parser(name, help=text)
        command.add_argument("version")
        command.add_argument("--by", required=True, help="who decides (recorded)")
        command.add_argument("--note")
    rollback = sub.add_parser("rollback", help="re-activate the previously active version")
    rollback.add_argument("--by", required=True, help="who decides (recorded)")
    rollback.add_argument("--note")
    for command in sub.choices.values():
        command.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def run_policy(argv: Sequence[str]) -> int:
    """Entry point: 0 on success, 2 on bad input or an unknown version, 1 otherwise."""
    try:
        args = build_parser().parse_args(argv)
        value, text = _run(args)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except HitlError as exc:
        print(f"hitl: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    print(json.dumps(value, indent=2, default=str) if args.json else text)
    return 0


def _run(args: argparse.Namespace) -> tuple[Any, str]:
    from hitl.policy import load_policy
    from hitl.settings import Settings

    settings = Settings()
    if args.action == "check":
        policy = load_policy(Path(args.file) if args.file else settings.policy)
        return policy.model_dump(mode="json"), f"ok\t{policy.full_version}"

    from hitl import policy_versions as pv
    from hitl.store import init_store, make_engine, session_scope

    engine = make_engine(settings.resolved_database_url())
    init_store(engine)
    with session_scope(engine) as session:
        if args.action == "versions":
            rows = pv.versions(session)
            return ([_public(row) for row in rows],
                    "\n".join(_line(row) for row in rows) or "no stored policy versions")
        if args.action == "show":
            row = pv.get(session, args.version)
            if row is None:
                raise pv.PolicyVersionNotFound(
                    f"version: unknown policy version {args.version!r}", field="version")
            data = {**_public(row), "policy": json.loads(row.body),
                    "proposal": json.loads(row.proposal) if row.proposal else None}
            return data, json.dumps(data, indent=2, default=str)
        if args.action == "propose":
            policy = load_policy(Path(args.file))
            row = pv.propose(session, policy, source="operator",
                             proposal={"proposed_by": args.by, "file": str(args.file),
                                       "note": args.note})
            return _public(row), _line(row)
        if args.action == "activate":
            row = pv.activate(session, args.version, by=args.by, note=args.note)
        elif args.action == "reject":
            row = pv.reject(session, args.version, by=args.by, note=args.note)
        else:
            row = pv.rollback(session, by=args.by, note=args.note)
        return _public(row), _line(row)


def _public(row: PolicyVersionRow) -> dict[str, Any]:
    return {"version": row.version, "status": row.status, "source": row.source,
            "created_at": row.created_at, "activated_at": row.activated_at,
            "activated_by": row.activated_by, "note": row.note}


def _line(row: PolicyVersionRow) -> str:
    when = row.activated_at.strftime("%Y-%m-%d %H:%M") if row.activated_at else "-"
    by = f" by {row.activated_by}" if row.activated_by else ""
    note = f"  ({row.note})" if row.note else ""
    return f"{row.version:<28}{row.status:<10}{row.source:<15}{when}{by}{note}"
