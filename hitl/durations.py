"""Durations as people write them in policy files: ``90s``, ``5m``, ``4h``, ``1d``."""

from __future__ import annotations

import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``; a bare number is already seconds.

    Raises:
        ValueError: for anything else, with the accepted forms in the message.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        # Policy files are TOML: a list, table or date here must be a ValueError
        # (a PolicyError naming the field), never a TypeError.
        raise ValueError("expected a duration like '90s', '5m', '4h', '1d' or seconds")
    if isinstance(value, int | float):
        if value < 0 or value != value or value == float("inf"):
            raise ValueError("must be a finite, non-negative number of seconds")
        try:
            return float(value)
        except OverflowError:  # an int beyond float range
            raise ValueError("must be a finite, non-negative number of seconds") from None
    match = _PATTERN.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration like '90s', '5m', '4h' or '1d'")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds == float("inf"):  # hundreds of digits: as unusable as a bare inf
        raise ValueError(f"{value[:20]!r}... is not a finite duration")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form, for summaries like ``SLA 5m``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds!r}s"  # repr is the shortest string that round-trips exactly
