"""Structured (JSON-lines) logging for every process hitl runs.

Fields passed as ``extra`` become top-level keys, so logs can be searched by
``decision_id``. Nothing secret is ever passed here.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key != "temporal_log":
                entry[key] = _scalar(value)
        if (core := getattr(record, "temporal_log", None)) is not None:
            # A line forwarded from the SDK core: its target and fields (run_id,
            # error, ...) become keys, so they can be searched like hitl's own.
            entry["target"] = core.target
            for key, value in core.fields.items():
                entry.setdefault(key, _scalar(value))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _scalar(value: object) -> object:
    return value if isinstance(value, str | int | float | bool) else str(value)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
