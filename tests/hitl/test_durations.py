"""Durations in policy files: ``90s``, ``5m``, ``4h``, ``1d`` or bare seconds."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90.0), ("5m", 300.0), ("4h", 14_400.0), ("1d", 86_400.0), ("1.5h", 5_400.0),
    ("0s", 0.0), (" 2 m ", 120.0), ("0.25d", 21_600.0), (90, 90.0), (2.5, 2.5), (0, 0.0),
])
def test_parse(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize("bad", [
    "5 minutes", "", "s", "5", "-5m", "5ms", "5w", "1h30m", "5M", "1e3s", "inf", "nan", ".5m",
    -1, -0.5, math.nan, math.inf, True, False,
])
def test_parse_rejects(bad: Any) -> None:
    with pytest.raises(ValueError, match="duration|seconds"):
        parse_duration(bad)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (45, "45s"), (90, "90s"), (60, "1m"), (300, "5m"), (5_400, "90m"),
    (3_600, "1h"), (86_400, "1d"), (172_800, "2d"), (90_000, "25h"), (2.5, "2.5s"),
])
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=999_999))
def test_round_trip_of_whole_seconds(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=10**6), st.sampled_from("mhd"))
def test_round_trip_of_minutes_hours_days(count: int, unit: str) -> None:
    seconds = parse_duration(f"{count}{unit}")
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("seconds", [1_000_000, 1_000_001, 1.2345678])
def test_round_trip_of_large_or_precise_seconds(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
