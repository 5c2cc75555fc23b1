"""The amounts a decision moves, read at the paths the policy names.

The amount risk modifier (``risk.amount_critical_above``) and the ``amount_limit``
rule must see what the action will execute, not only what the caller declared in
its context: a refund whose context says 0 and whose params say 99,999 is a
99,999 refund. Both read every path in ``risk.amount_paths`` and the largest
amount found counts. A value at one of those paths that is not a plain finite
number (an object, a list, a boolean, null, a string that does not read as a
number, or one too large to compare exactly) cannot be bounded, so it sends the
decision to a person as critical.

Pure, a function of the request and the policy: the same call screens a
reviewer's edited action (``request.model_copy(update={"action": edited})``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from hitl.request import DecisionRequest

if TYPE_CHECKING:
    from hitl.policy import Policy

DEFAULT_AMOUNT_PATHS = ("context.amount", "action.params.amount")
ROOTS = ("context", "action.params")
MAX_PATH_CHARS = 200
MAX_STEPS = 16
# Beyond 2**53 a float no longer holds every integer: two different amounts could
# compare equal, and the target may read the digits differently than we do.
MAX_MAGNITUDE = float(2**53)
# A wildcard path over a long list stops here; the rest reads as one unbounded amount.
MAX_AMOUNTS = 1000
MAX_NUMBER_CHARS = 40
# JSON's number grammar, ASCII digits only: what a string amount must look like.
# Python's float() is laxer (underscores, other scripts' digits, "inf", spaces).
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_STEP = re.compile(r"\.(?P<key>[A-Za-z0-9_-]+)|\[(?P<index>[0-9]{1,6}|\*)\]")

Step = str | int | None
"""A key, a list index, or ``None`` for every item of a list (``[*]``)."""


@dataclass(frozen=True, slots=True)
class AmountPath:
    text: str
    root: str  # one of ROOTS
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Amount:
    """One value found at an amount path; ``value`` is None when it is not a number,
    and ``problem`` then says what it is instead."""

    path: str  # concrete: ``action.params.lines[2].amount``
    value: float | None
    problem: str = ""

    def describe(self) -> str:
        if self.value is None:
            return f"{self.path} is not a number ({self.problem})"
        return f"{self.path}={self.value:g}"


@dataclass(frozen=True, slots=True)
class AmountReading:
    """Every amount a request carries at the policy's paths, in path order."""

    amounts: tuple[Amount, ...]

    @property
    def numbers(self) -> tuple[Amount, ...]:
        return tuple(a for a in self.amounts if a.value is not None)

    @property
    def invalid(self) -> tuple[Amount, ...]:
        return tuple(a for a in self.amounts if a.value is None)

    @property
    def negative(self) -> tuple[Amount, ...]:
        return tuple(a for a in self.numbers if (a.value or 0.0) < 0)

    @property
    def largest(self) -> Amount | None:
        """The amount of largest magnitude (a negative adjustment moves money too)."""
        numbers = self.numbers
        return max(numbers, key=lambda a: abs(a.value or 0.0)) if numbers else None


@lru_cache(maxsize=256)
def parse_amount_path(text: str) -> AmountPath:
    """``context.x``, ``action.params.x.y``, ``action.params.lines[0].amount`` or
    ``action.params.lines[*].amount``; raises ``ValueError`` saying what is wrong."""
    if len(text) > MAX_PATH_CHARS:
        raise ValueError(f"amount path is longer than {MAX_PATH_CHARS} characters")
    root = next((r for r in ROOTS if text.startswith(r) and text[len(r):len(r) + 1] in (".", "[")),
                None)
    if root is None:
        raise ValueError(f"amount path {text!r} must start with 'context.' or 'action.params.'")
    steps: list[Step] = []
    position = len(root)
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            raise ValueError(
                f"amount path {text!r}: unexpected {text[position:position + 10]!r} at "
                f"character {position}; write keys as .name (letters, digits, _ and -) and "
                "list items as [N] or [*]")
        key, index = match.group("key"), match.group("index")
        steps.append(key if key is not None else (None if index == "*" else int(index)))
        position = match.end()
    if not steps:
        raise ValueError(f"amount path {text!r} names no field under {root}")
    if len(steps) > MAX_STEPS:
        raise ValueError(f"amount path {text!r} is deeper than {MAX_STEPS} steps")
    return AmountPath(text=text, root=root, steps=tuple(steps))


def read_amounts(request: DecisionRequest, policy: Policy) -> AmountReading:
    """The amounts ``request`` carries at ``policy.risk.amount_paths``."""
    return read_amounts_at(request, policy.risk.amount_paths)


def read_amounts_at(request: DecisionRequest, paths: Sequence[str]) -> AmountReading:
    roots: dict[str, Any] = {"context": request.context.model_dump(mode="json"),
                             "action.params": request.action.params}
    found: list[Amount] = []
    for text in paths:
        path = parse_amount_path(text)
        for amount in _walk(path.root, roots[path.root], path.steps):
            if len(found) == MAX_AMOUNTS:
                found.append(Amount(path=path.text, value=None,
                                    problem=f"more than {MAX_AMOUNTS} amounts"))
                return AmountReading(tuple(found))
            found.append(amount)
    return AmountReading(tuple(found))


def _walk(where: str, value: Any, steps: tuple[Step, ...]) -> Iterator[Amount]:
    """The amounts under ``value`` along ``steps``. A missing key or index is no
    amount; a value of the wrong shape on the way is one that cannot be read."""
    if not steps:
        yield _amount(where, value)
        return
    step, rest = steps[0], steps[1:]
    if isinstance(step, str):
        if not isinstance(value, dict):
            yield Amount(path=where, value=None, problem=f"{_kind(value)} where an object "
                                                         "was expected")
        elif step in value:
            yield from _walk(f"{where}.{step}", value[step], rest)
        return
    if not isinstance(value, list):
        yield Amount(path=where, value=None, problem=f"{_kind(value)} where a list was expected")
    elif step is None:
        for index, item in enumerate(value):
            yield from _walk(f"{where}[{index}]", item, rest)
    elif step < len(value):
        yield from _walk(f"{where}[{step}]", value[step], rest)


def _amount(path: str, value: Any) -> Amount:
    number, problem = parse_number(value)
    return Amount(path=path, value=number, problem=problem)


def parse_number(value: Any) -> tuple[float | None, str]:
    """``(number, "")`` for a finite number within ±2**53 (or a string in JSON's
    number grammar that reads as one), else ``(None, what it is instead)``."""
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return None, _kind(value)
    if isinstance(value, str):
        if len(value) > MAX_NUMBER_CHARS or not _NUMBER.fullmatch(value):
            return None, f"a string that is not a number: {value[:20]!r}"
        number = float(value)
    elif isinstance(value, int):
        if abs(value) > MAX_MAGNITUDE:
            return None, "an integer beyond ±2^53, too large to compare exactly"
        number = float(value)
    elif isinstance(value, float):
        number = value
    else:
        return None, type(value).__name__
    if not math.isfinite(number):
        return None, "not a finite number"
    if abs(number) > MAX_MAGNITUDE:
        return None, "beyond ±2^53, too large to compare exactly"
    return number, ""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "a number"
