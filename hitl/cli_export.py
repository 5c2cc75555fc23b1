"""``hitl export``: reviewed decisions as JSONL, one ``hitl.export.ExportRow`` a line.

Reads ``HITL_DATABASE_URL`` (or the SQLite store in ``HITL_DATA_DIR``). Rows
stream from the store into a temporary file next to ``--output``, which is
renamed over it only when every row is written: a failure leaves the old file
(or none) in place, never half an export. ``hitl/cli.py`` dispatches here.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NoReturn

from hitl.cli_failures import HANDLED, exit_code
from hitl.cli_metrics import parse_moment
from hitl.errors import InputError
from hitl.export import ExportRow, reviewed_decisions
from hitl.settings import Settings
from hitl.store import init_store, make_engine, session_scope


def run_export(argv: Sequence[str]) -> int:
    parser = _Parser(prog="hitl export", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--output", required=True, metavar="FILE.jsonl",
                        help="where to write; replaced atomically")
    parser.add_argument("--since", help="submitted at or after, ISO date or datetime (UTC "
                                        "unless it says)")
    parser.add_argument("--until", help="submitted before; a bare date includes that day")
    parser.add_argument("--task-type", help="only this task type")
    try:
        args = parser.parse_args(argv)
        since = parse_moment(args.since, "--since", end=False) if args.since else None
        until = parse_moment(args.until, "--until", end=True) if args.until else None
        if since is not None and until is not None and since >= until:
            raise InputError(f"--since {since.isoformat()} is not before --until "
                             f"{until.isoformat()}", field="--since")
        output = _output(args.output)
        engine = make_engine(Settings().resolved_database_url())
        try:
            init_store(engine)
            with session_scope(engine) as session:
                count = write_jsonl(reviewed_decisions(session=session, since=since,
                                                       until=until, task_type=args.task_type),
                                    output)
        finally:
            engine.dispose()
    except EXPORT_FAILURES as exc:
        return exit_code("hitl export", exc, failed_note="; the output file was not changed")
    print(f"exported {count} reviewed decision{'' if count == 1 else 's'} to {output}")
    return 0


def write_jsonl(rows: Iterable[ExportRow], path: Path) -> int:
    """Write ``rows`` one JSON object a line, atomically; returns how many.

    The temporary file sits in the target's directory (a rename across file
    systems is not atomic) and is fsynced before the rename, so after a crash
    the file is either the old one or the complete new one.
    """
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
        delete=False)
    count = 0
    try:
        with handle:
            for row in rows:
                handle.write(row.model_dump_json())
                handle.write("\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return count


def _output(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.parent.is_dir():
        raise InputError(f"--output: directory {str(path.parent)!r} does not exist",
                         field="--output")
    if path.is_dir():
        raise InputError(f"--output: {text!r} is a directory", field="--output")
    return path


# The output file itself can fail too (a full disk, no permission).
EXPORT_FAILURES: tuple[type[BaseException], ...] = (*HANDLED, OSError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise InputError(message)
