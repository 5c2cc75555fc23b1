"""Files a caller hands hitl (a request, a policy, labeled data): read whole, bounded.

A file over its limit is refused before any of it is parsed, and one that is not
UTF-8 is refused naming the first bad byte; both as one ``InputError`` line (the
CLI's exit 2), never a traceback. A UTF-8 byte order mark is allowed and dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from hitl.errors import InputError


def read_text(source: str | Path, *, max_bytes: int, what: str,
              stream: BinaryIO | None = None,
              error: type[InputError] = InputError, field: str = "file") -> str:
    """The text of ``source`` (read from ``stream`` instead when given, e.g. stdin).

    ``what`` names the content in messages ("decision request"); ``error`` is the
    ``InputError`` subclass to raise (``PolicyError`` for a policy file), naming ``field``.
    """
    try:
        if stream is not None:
            data = stream.read(max_bytes + 1)
        else:
            with Path(source).open("rb") as handle:
                data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{source}: cannot read {what}: {exc.strerror or exc}",
                    field=field) from None
    if len(data) > max_bytes:
        raise error(f"{source}: {what} is over {max_bytes} bytes", field=field)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{source}: {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                    f"offset {exc.start})", field=field) from None
