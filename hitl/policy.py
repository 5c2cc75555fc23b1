"""The routing policy: risk matrix, thresholds, SLAs. Pure functions, no Temporal.

The workflow, the CLI and calibration all use these, so a policy can be tested,
diffed and reasoned about without a server. A policy is loaded once per worker
and applied by the rules local activity, whose result (an ``Assessment``) is
recorded in history: a decision keeps the policy it was screened under.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from hitl.amounts import DEFAULT_AMOUNT_PATHS, parse_amount_path, read_amounts
from hitl.cascade import Assessment, JudgeResult, Routing, SlaPolicy
from hitl.durations import parse_duration
from hitl.enums import LayerStatus, RiskLevel, Zone
from hitl.errors import PolicyError
from hitl.input_files import read_text
from hitl.limits import MAX_BODY_BYTES
from hitl.request import DecisionRequest
from hitl.textfold import fold

Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
# A year bounds every deadline: far beyond any review SLA, and well inside what a
# workflow timer (and a datetime) can hold, so a policy that validates can run.
MAX_DEADLINE_SECONDS = 366 * 86400.0
Seconds = Annotated[float, BeforeValidator(parse_duration), Field(le=MAX_DEADLINE_SECONDS)]
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Approvers = Annotated[int, Field(ge=1, le=5)]
DEFAULT_TOKEN_LIFETIME = 90 * 86400.0  # reviewer tokens (review.token_lifetime)


def _amount_path(text: str) -> str:
    return parse_amount_path(text).text


# Checked item by item, so an error names the index (``risk.amount_paths.1``).
AmountPathText = Annotated[str, AfterValidator(_amount_path)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RiskConfig(_Strict):
    default: RiskLevel = RiskLevel.MEDIUM
    task_types: dict[str, RiskLevel] = Field(default_factory=dict)
    amount_critical_above: float = Field(default=10_000, ge=0, allow_inf_nan=False)
    # Where amounts are read (hitl.amounts), for this modifier and the amount_limit rule.
    amount_paths: list[AmountPathText] = Field(
        default_factory=lambda: list(DEFAULT_AMOUNT_PATHS), min_length=1, max_length=20)
    new_user_min_risk: RiskLevel = RiskLevel.HIGH
    multiple_users_risk: RiskLevel = RiskLevel.CRITICAL


class ThresholdConfig(_Strict):
    by_risk: dict[RiskLevel, Probability]
    task_types: dict[str, Probability] = Field(default_factory=dict)
    outcomes: dict[str, dict[str, Probability]] = Field(default_factory=dict)

    @field_validator("by_risk")
    @classmethod
    def _every_risk_level(cls, value: dict[RiskLevel, float]) -> dict[RiskLevel, float]:
        missing = [level.value for level in RiskLevel if level not in value]
        if missing:
            raise ValueError(f"by_risk needs a threshold for every risk level; missing {missing}")
        return value


class SlaConfig(_Strict):
    queue: Seconds = 3600.0
    escalate: Seconds = 300.0
    hard_deadline: Seconds = Field(default=86400.0, validate_default=True)

    # A field validator (not a model validator) so the error names
    # ``sla.hard_deadline``; it runs on the default too, and queue and escalate
    # are declared first, so they are in ``info.data`` when they validated.
    @field_validator("hard_deadline")
    @classmethod
    def _deadline_after_sla(cls, value: float, info: ValidationInfo) -> float:
        if value <= 0:
            raise ValueError("hard_deadline must be positive")
        slas = [info.data[name] for name in ("queue", "escalate") if name in info.data]
        if slas and value < max(slas):
            raise ValueError("hard_deadline must not be shorter than the queue and escalate SLAs")
        return value


class AdaptiveAuditConfig(_Strict):
    """Per-task-type audit sampling (``hitl.sampling``): high while a task type is
    new or its audits find errors, low once it has a clean record."""

    enabled: bool = True
    new_rate: Probability = 0.25
    stable_rate: Probability = 0.075
    min_audits: int = Field(default=50, ge=1, le=1_000_000)
    max_error_rate: Probability = 0.02
    window: int = Field(default=200, ge=1, le=100_000)
    recent: int = Field(default=20, ge=1, le=100_000)
    recent_max_errors: int = Field(default=0, ge=0, le=100_000)

    @field_validator("stable_rate")
    @classmethod
    def _stable_below_new(cls, value: float, info: ValidationInfo) -> float:
        if "new_rate" in info.data and value > info.data["new_rate"]:
            raise ValueError("stable_rate must not exceed new_rate")
        return value

    @field_validator("recent")
    @classmethod
    def _recent_within_window(cls, value: int, info: ValidationInfo) -> int:
        if "window" in info.data and value > info.data["window"]:
            raise ValueError("recent must not exceed window")
        return value


class AuditConfig(_Strict):
    sample_rate: Probability = 0.2
    adaptive: AdaptiveAuditConfig = Field(default_factory=AdaptiveAuditConfig)


class LoadSheddingConfig(_Strict):
    """Under a review backlog, relax LOW-risk bars a bounded step (``hitl.sampling``).

    ``floors`` are the certified minimum thresholds per task type (recalibration
    writes them into the version it proposes); a task type without one, and no
    ``default_floor``, is never relaxed.
    """

    enabled: bool = True
    queue_depth: int = Field(default=1000, ge=1)
    max_relaxation: float = Field(default=0.05, ge=0.0, le=0.1, allow_inf_nan=False)
    floors: dict[str, Probability] = Field(default_factory=dict)
    default_floor: Probability | None = None


class RespondNowConfig(_Strict):
    min_confidence: Probability | None = None
    risks: list[RiskLevel] = Field(default_factory=lambda: [RiskLevel.LOW])

    @field_validator("risks")
    @classmethod
    def _never_critical(cls, value: list[RiskLevel]) -> list[RiskLevel]:
        if RiskLevel.CRITICAL in value:
            raise ValueError(
                "risks may not include 'critical': critical never runs without a human")
        return value


class RulesConfig(_Strict):
    """Banned terms and injection patterns match text folded by ``hitl.textfold``
    (lower case, single spaces, look-alikes as Latin letters): write patterns for it."""

    max_output_chars: int = Field(default=20_000, gt=0)
    banned_terms: list[str] = Field(default_factory=list)
    injection_patterns: list[str] = Field(default_factory=list)
    max_amount: dict[str, Amount] = Field(default_factory=dict)
    required_params: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("banned_terms")
    @classmethod
    def _terms_fold_to_words(cls, value: list[str]) -> list[str]:
        for index, term in enumerate(value):
            if not fold(term):
                raise ValueError(f"banned_terms[{index}] is blank once folded "
                                 "(hitl.textfold): it would match everywhere")
        return value

    @field_validator("injection_patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for index, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"injection_patterns[{index}] is not a valid regex: {exc}") from exc
        return value


class ReviewConfig(_Strict):
    """How many distinct approvers a decision needs (four-eyes)."""

    approvals_by_risk: dict[RiskLevel, Approvers] = Field(
        default_factory=lambda: {RiskLevel.CRITICAL: 2})
    approvals_by_task_type: dict[str, Approvers] = Field(default_factory=dict)
    # Blind double review: the share of escalations two reviewers decide without
    # seeing each other's verdict, for reviewer agreement (kappa, alpha). Off by
    # default: each blind item costs a second review and a lone rejection no
    # longer ends it, so a deployment opts in.
    double_blind_rate: Probability = 0.0
    double_blind_by_task_type: dict[str, Probability] = Field(default_factory=dict)
    # How long a reviewer token (and the signing key derived from it) is valid from its
    # issue (`hitl reviewers add|rotate`); 0 means it never expires.
    token_lifetime: Seconds = DEFAULT_TOKEN_LIFETIME

    def required(self, task_type: str, risk: RiskLevel) -> int:
        if task_type in self.approvals_by_task_type:
            return self.approvals_by_task_type[task_type]
        return self.approvals_by_risk.get(risk, 1)

    def blind_rate(self, task_type: str) -> float:
        return self.double_blind_by_task_type.get(task_type, self.double_blind_rate)


class Policy(_Strict):
    version: str = Field(min_length=1, max_length=100)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    thresholds: ThresholdConfig
    sla: SlaConfig = Field(default_factory=SlaConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    respond_now: RespondNowConfig = Field(default_factory=RespondNowConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    load_shedding: LoadSheddingConfig = Field(default_factory=LoadSheddingConfig)

    @cached_property
    def full_version(self) -> str:
        """The declared version plus a content digest, so an edit without a
        version bump is still told apart in the decisions it screened.

        A field added after versions were stored is left out of the digest while it
        holds its default (``_ADDED_DEFAULTS``): a stored version must still hash to
        its name after an upgrade (``hitl.policy_versions``), or the active policy
        would stop loading.
        """
        data = self.model_dump(mode="json")
        for section, name, default in _ADDED_DEFAULTS:
            if data[section].get(name) == default:
                del data[section][name]
        canonical = json.dumps(data, sort_keys=True)
        return f"{self.version}+{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


_ADDED_DEFAULTS: tuple[tuple[str, str, Any], ...] = (
    ("risk", "amount_paths", list(DEFAULT_AMOUNT_PATHS)),
    ("review", "token_lifetime", DEFAULT_TOKEN_LIFETIME),
)


def parse_policy(data: dict[str, Any], *, source: str = "policy") -> Policy:
    """Validate a policy mapping; errors name the field (``sla.escalate``)."""
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(root)"
        raise PolicyError(f"{source}: {field}: {first['msg']}", field=field) from exc


def load_policy(path: Path | None = None) -> Policy:
    """The policy at ``path``, or the built-in default when ``path`` is None."""
    if path is None:
        text = resources.files("hitl").joinpath("default_policy.toml").read_text()
        source = "built-in policy"
    else:
        text = read_text(path, max_bytes=MAX_BODY_BYTES, what="the policy", error=PolicyError,
                         field="policy")
        source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}", field="policy") from exc
    return parse_policy(data, source=source)


def assess_risk(request: DecisionRequest, policy: Policy) -> tuple[RiskLevel, list[str]]:
    """Static risk of the task type, raised (never lowered) by dynamic modifiers.

    Unlike a first-match chain, every modifier applies, so a new user moving a
    large amount is critical, not merely high. The amount is the largest found at
    ``risk.amount_paths``; one that is not a number cannot be bounded, so it is
    critical too (and fails the ``amount_limit`` rule).
    """
    config = policy.risk
    base = config.task_types.get(request.task_type)
    risk = base if base is not None else config.default
    reasons = [f"task type {request.task_type}: {risk.value}" + ("" if base else " (unknown type)")]
    amounts = read_amounts(request, policy)
    if amounts.invalid:
        first, more = amounts.invalid[0], len(amounts.invalid) - 1
        risk = risk.at_least(RiskLevel.CRITICAL)
        reasons.append(f"amount {first.describe()}" + (f" (and {more} more)" if more else "")
                       + ": cannot be bounded, critical")
    largest = amounts.largest
    if largest is not None and abs(largest.value or 0.0) > config.amount_critical_above:
        risk = risk.at_least(RiskLevel.CRITICAL)
        reasons.append(f"amount {largest.describe()} > {config.amount_critical_above:g}: "
                       "critical")
    context = request.context
    if context.is_new_user:
        risk = risk.at_least(config.new_user_min_risk)
        reasons.append(f"new user: at least {config.new_user_min_risk.value}")
    if context.affects_multiple_users:
        risk = risk.at_least(config.multiple_users_risk)
        reasons.append(f"affects multiple users: {config.multiple_users_risk.value}")
    return risk, reasons


def threshold_for(
    request: DecisionRequest, policy: Policy, risk: RiskLevel
) -> tuple[float, str]:
    """The confidence bar for this decision and where it came from."""
    config = policy.thresholds
    by_risk = config.by_risk[risk]
    outcome_bars = config.outcomes.get(request.task_type, {})
    if request.outcome is not None and request.outcome in outcome_bars:
        specific = outcome_bars[request.outcome]
        source = f"outcome {request.task_type}/{request.outcome}"
    elif request.task_type in config.task_types:
        specific, source = config.task_types[request.task_type], f"task type {request.task_type}"
    else:
        return by_risk, f"risk {risk.value}"
    static = policy.risk.task_types.get(request.task_type, policy.risk.default)
    if risk.rank > static.rank and by_risk > specific:
        return by_risk, f"risk {risk.value} (raised from {static.value})"
    return specific, source


def assess(request: DecisionRequest, policy: Policy, *, judge_configured: bool) -> Assessment:
    """Everything the workflow needs from the policy for one decision."""
    risk, reasons = assess_risk(request, policy)
    threshold, source = threshold_for(request, policy, risk)
    return Assessment(
        policy_version=policy.full_version,
        risk=risk,
        risk_reasons=reasons,
        threshold=threshold,
        threshold_source=source,
        sla=SlaPolicy(
            queue_seconds=policy.sla.queue,
            escalate_seconds=policy.sla.escalate,
            hard_deadline_seconds=policy.sla.hard_deadline,
        ),
        audit_sample_rate=policy.audit.sample_rate,
        respond_now_min_confidence=policy.respond_now.min_confidence,
        respond_now_risks=list(policy.respond_now.risks),
        judge_configured=judge_configured,
        approvals_required=policy.review.required(request.task_type, risk),
        double_blind_rate=policy.review.blind_rate(request.task_type),
    )


def route(
    *,
    confidence: float,
    reversible: bool,
    assessment: Assessment,
    rule_failures: list[str],
    judge: JudgeResult,
) -> Routing:
    """The zone of the risk matrix, failing closed.

    Critical risk, a failed rule, a failed judge or a judge error all force a
    person; a skipped judge (none configured) neither passes nor fails. A
    forced or unconfident decision goes to QUEUE at low/medium risk and to
    ESCALATE at high/critical risk.
    """
    risk = assessment.risk
    forced: list[str] = []
    if risk is RiskLevel.CRITICAL:
        forced.append("critical risk: never autonomous")
    forced.extend(f"rule failed: {name}" for name in rule_failures)
    if judge.status is LayerStatus.FAILED:
        forced.append("judge failed the output")
    elif judge.status is LayerStatus.ERROR:
        forced.append("judge unavailable or unparseable: failing closed")
    confident = confidence >= assessment.threshold
    comparison = ">=" if confident else "<"
    reasons = [f"confidence {confidence:.3f} {comparison} {assessment.threshold:.2f} "
               f"({assessment.threshold_source})", *forced]
    high = risk.rank >= RiskLevel.HIGH.rank
    if forced or not confident:
        zone = Zone.ESCALATE if high else Zone.QUEUE
    else:
        zone = Zone.AUTO_AUDIT if high else Zone.AUTO
    sla: float | None = None
    if zone is Zone.ESCALATE:
        sla = assessment.sla.escalate_seconds
    elif zone is Zone.QUEUE:
        sla = assessment.sla.queue_seconds
        floor = assessment.respond_now_min_confidence
        if (not forced and reversible and floor is not None and confidence >= floor
                and risk in assessment.respond_now_risks):
            sla = 0.0
            reasons.append(f"middle band (>= {floor:.2f}): respond now, review after")
    return Routing(zone=zone, reasons=reasons, sla_seconds=sla)
