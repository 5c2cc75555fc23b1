"""The cheap first layer of the cascade: deterministic checks on the request.

Pure and fast (compiled once per policy), so it can run as a local activity on
every decision and be benchmarked as a plain function. Each check reports a
finding, passed or not, so reviewers see which rule fired and why.

Banned terms and injection patterns match text folded as a reader sees it
(``hitl.textfold``: no case, no invisible characters, one space for any run of
whitespace, look-alike letters as the Latin ones they imitate), so spelling
cannot step around them; the snippet a reviewer is shown is the original text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from hitl.amounts import read_amounts
from hitl.cascade import RuleFinding
from hitl.policy import Policy, RulesConfig
from hitl.request import DecisionRequest
from hitl.textfold import fold, fold_mapped

_SNIPPET = 60


@dataclass(frozen=True)
class CompiledRules:
    config: RulesConfig
    banned: re.Pattern[str] | None
    injections: tuple[re.Pattern[str], ...]


_compiled: dict[int, CompiledRules] = {}


def compile_rules(config: RulesConfig) -> CompiledRules:
    """Regexes compiled once per rules configuration object.

    Keyed by identity (a config holds lists, so it is not hashable) and checked
    by identity, so a recycled id never returns another config's rules.
    """
    cached = _compiled.get(id(config))
    if cached is not None and cached.config is config:
        return cached
    if len(_compiled) > 32:
        _compiled.clear()
    _compiled[id(config)] = compiled = _compile(config)
    return compiled


def _compile(config: RulesConfig) -> CompiledRules:
    banned = None
    if config.banned_terms:
        alternatives = "|".join(re.escape(fold(term)) for term in config.banned_terms)
        banned = re.compile(rf"\b(?:{alternatives})\b")
    return CompiledRules(
        config=config,
        banned=banned,
        injections=tuple(_compile_folded(p) for p in config.injection_patterns),
    )


_ESCAPE = re.compile(r"\\.")


def _compile_folded(pattern: str) -> re.Pattern[str]:
    """A pattern for folded (lower-case) text. One with capitals was written for raw
    text: it gets IGNORECASE so it still matches. Only then: IGNORECASE makes Python's
    re several times slower on long texts."""
    capitals = any(char.isupper() for char in _ESCAPE.sub("", pattern))
    return re.compile(pattern, re.IGNORECASE if capitals else 0)


def _strings(where: str, value: object) -> Iterator[tuple[str, str]]:
    """Every string in a JSON value, keys included, with its path."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}"
            yield path, str(key)
            yield from _strings(path, item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(f"{where}[{index}]", item)


def _texts(request: DecisionRequest) -> Iterator[tuple[str, str]]:
    """Every piece of free text an attacker could use to steer the judge.

    The judge receives the whole context (declared fields and extras) and all
    action params, nested values and keys included, so all of them are walked.
    """
    yield "output", request.output
    for index, candidate in enumerate(request.candidates):
        yield f"candidates[{index}].outcome", candidate.outcome
    yield from _strings("context", request.context.model_dump(mode="json"))
    yield from _strings("action.params", request.action.params)


def _search(patterns: Iterable[re.Pattern[str]], text: str) -> tuple[int, int] | None:
    """Where the first of ``patterns`` to match ``text`` folded matches, as a span of
    the original ``text``; None when none does."""
    folded = fold(text)
    for pattern in patterns:
        hit = pattern.search(folded)
        if hit is not None:
            if not folded:
                return 0, 0
            mapped = fold_mapped(text)
            first = min(hit.start(), len(folded) - 1)
            return mapped.source(first, max(hit.end(), first + 1))
    return None


def _snippet(text: str, span: tuple[int, int]) -> str:
    """The original text around a match (its repr shows invisible characters escaped)."""
    start = max(0, span[0] - 10)
    return text[start : max(start + _SNIPPET, span[1])][: _SNIPPET * 2]


def _amount_limit(request: DecisionRequest, policy: Policy) -> RuleFinding:
    """The largest amount at the policy's amount paths within the cap; a negative
    amount, or one that is not a number, fails whatever the cap."""
    caps = policy.rules.max_amount
    limit = caps.get(request.task_type, caps.get(request.action.type, caps.get("*")))
    amounts = read_amounts(request, policy)
    problems = [a.describe() for a in amounts.invalid[:3]]
    if len(amounts.invalid) > 3:
        problems.append(f"{len(amounts.invalid) - 3} more amounts that are not numbers")
    problems += [f"negative amount {a.describe()}" for a in amounts.negative[:3]]
    largest = amounts.largest
    if limit is not None and largest is not None and (largest.value or 0.0) > limit:
        problems.append(f"largest amount {largest.describe()} > limit {limit:g}")
    return RuleFinding(rule="amount_limit", passed=not problems, detail="; ".join(problems))


def check_rules(request: DecisionRequest, policy: Policy) -> list[RuleFinding]:
    """All rule findings for ``request`` under ``policy``; order is stable."""
    rules = compile_rules(policy.rules)
    config = rules.config
    findings: list[RuleFinding] = []

    required = config.required_params.get(request.action.type, [])
    missing = [name for name in required if name not in request.action.params]
    findings.append(RuleFinding(
        rule="action_schema",
        passed=not missing,
        detail=f"action {request.action.type} is missing params {missing}" if missing else "",
    ))

    findings.append(_amount_limit(request, policy))

    too_long = len(request.output) > config.max_output_chars
    findings.append(RuleFinding(
        rule="output_length",
        passed=not too_long,
        detail=f"output has {len(request.output)} chars > {config.max_output_chars}"
        if too_long else "",
    ))

    banned = _search([rules.banned], request.output) if rules.banned else None
    findings.append(RuleFinding(
        rule="banned_terms",
        passed=banned is None,
        detail=f"output contains banned term {request.output[banned[0]:banned[1]]!r}"
        if banned else "",
    ))

    injection = ""
    for where, text in _texts(request):
        span = _search(rules.injections, text)
        if span is not None:
            injection = f"{where}: {_snippet(text, span)!r}"
            break
    findings.append(RuleFinding(
        rule="injection_patterns", passed=not injection,
        detail=f"possible prompt injection in {injection}" if injection else "",
    ))
    return findings
