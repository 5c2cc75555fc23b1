"""How the store-reading commands (``hitl metrics``, ``audit verify``, ``export``)
end when they cannot finish: one line on stderr naming the problem; exit 2 for
bad input (argparse's own usage errors included), 1 when the store failed."""

from __future__ import annotations

import sys

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from hitl.errors import HitlError, InputError

HANDLED: tuple[type[BaseException], ...] = (
    SystemExit, InputError, ValidationError, HitlError, SQLAlchemyError)
"""What ``exit_code`` turns into an exit code; anything else is a bug and raises."""


def exit_code(command: str, exc: BaseException, *, failed_note: str = "") -> int:
    """Print ``exc`` as ``command``'s one error line and return the exit code.
    ``failed_note`` is added to a store failure's line (what was left untouched)."""
    if isinstance(exc, SystemExit):  # --help
        return exc.code if isinstance(exc.code, int) else 0
    if isinstance(exc, InputError | ValidationError):
        message = str(exc) if isinstance(exc, InputError) else exc.errors()[0]["msg"]
        print(f"{command}: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    print(f"{command}: error: {' '.join(str(exc).split())[:300]}{failed_note}", file=sys.stderr)
    return 1
