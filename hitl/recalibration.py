"""The feedback loop's maths: new certified thresholds from reviews and audits, as a diff.

Pure functions and pydantic models, no Temporal and no database: the
``RecalibrationWorkflow`` (through its activities), the CLI and tests share them.

What is recalibrated. Per task type (``thresholds.task_types``) and per risk
level (``thresholds.by_risk``, on the labels of decisions that ran at that
level), a threshold certified by ``hitl.calibration.certify_threshold`` on a
grid of hundredths, so the policy keeps readable bars and the Learn-then-Test
guarantee holds for exactly the value written. Critical scopes are never
touched (critical never runs without a person, so its bar changes nothing but
the diff), and neither are per-outcome bars: reviews do not record the outcome.

Where nothing is certified there are two cases. Too few labels
(``more_labels_needed`` is a number) keeps the current threshold: a quiet week
or a new task type is an absence of evidence, and raising every such bar to 1.0
would flood the queue and make the loop flap from week to week. The data
showing that no threshold meets the target (``more_labels_needed`` is None:
even the most confident decisions err too often) raises the bar to 1.0, every
decision of that scope to a person; such a jump is always outside the
auto-apply bounds, so an operator sees it first.

A caveat the figures carry: labels come from decisions a person looked at
(mostly those below the bar) and from sampled audits (above it, high risk
only), not from a uniform sample, so the expected automation and error on
"the labeled data" describe those decisions, not all traffic.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from hitl.enums import RiskLevel
from hitl.policy import Policy, parse_policy

POLICY_CHANGE_TASK_TYPE = "policy_change"
APPLY_POLICY_ACTION = "apply_policy"
RECALIBRATION_ACTOR = "hitl-recalibration"
UNCERTIFIABLE = 1.0  # a bar nothing reaches: every decision of the scope to a person
_GRID = tuple(i / 100 for i in range(1, 100))  # exact hundredths, strict to loose
_EPS = 1e-9

Level = Annotated[float, Field(gt=0.0, lt=1.0, allow_inf_nan=False)]
Step = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class RecalibrationBounds(BaseModel):
    """When a proposed policy may be applied without an operator's approval.

    Every changed threshold must be certified, no looser than its certified
    value, of a non-critical scope, and move by at most ``max_step``. With
    ``auto_apply`` off every change goes to the apply gate.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    auto_apply: bool = True
    max_step: Step = 0.02


class RecalibrationConfig(BaseModel):
    """What a recalibration run certifies against, over which labels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_error: Level = 0.02
    delta: Level = 0.05
    lookback_days: float = Field(default=90.0, gt=0, le=3660, allow_inf_nan=False)
    bounds: RecalibrationBounds = Field(default_factory=RecalibrationBounds)


@dataclass(frozen=True, slots=True)
class Label:
    """One decision whose correctness a person established (a review or an audit)."""

    confidence: float
    correct: bool
    task_type: str
    risk: RiskLevel
    source: Literal["review", "audit"]


class FeedbackUsage(BaseModel):
    """How much feedback a recalibration used; ``hitl metrics`` reports it."""

    labels: int
    reviews_used: int  # decisions labeled by their decisive review
    corrections_used: int  # of those, rejected or edited: the reviews that teach
    audits_used: int
    since: datetime
    until: datetime


class ThresholdChange(BaseModel):
    """One scope's bar, old and new, with what each means on the labeled data.

    Automation is the share of the scope's labels at or above the bar; error is
    the observed share wrong among those, with its one-sided upper bound (the
    certified bound for a certified bar, else Clopper-Pearson at ``delta``).
    """

    kind: Literal["task_type", "risk"]
    name: str
    risk: RiskLevel
    old: float
    new: float
    certified: float | None
    n: int
    old_automation: float
    new_automation: float
    old_error: float | None
    new_error: float | None
    old_error_bound: float | None
    new_error_bound: float | None
    note: str

    @property
    def changed(self) -> bool:
        return abs(self.new - self.old) > _EPS

    @property
    def scope(self) -> str:
        return self.name if self.kind == "task_type" else f"risk {self.name}"


class PolicyDiff(BaseModel):
    base_version: str
    max_error: float
    delta: float
    feedback: FeedbackUsage
    entries: list[ThresholdChange] = Field(default_factory=list)

    @property
    def changes(self) -> list[ThresholdChange]:
        return [entry for entry in self.entries if entry.changed]


class Recalibration(BaseModel):
    """The proposed policy (None when nothing changes) and the evidence for it."""

    policy: Policy | None
    diff: PolicyDiff


class RecalibrationInput(BaseModel):
    """The workflow's input: the schedule stores it with its action."""

    config: RecalibrationConfig = Field(default_factory=RecalibrationConfig)


class ProposeInput(BaseModel):
    config: RecalibrationConfig
    now: datetime  # the workflow's time: the window's end and the version's name
    workflow_id: str


class Proposal(BaseModel):
    """A recalibration's outcome before anyone decides: ``version`` None means no change."""

    base_version: str
    version: str | None
    diff: PolicyDiff
    violations: list[str] = Field(default_factory=list)
    text: str = ""  # the diff as a reviewer reads it
    context: dict[str, JsonValue] = Field(default_factory=dict)

    @property
    def within_bounds(self) -> bool:
        return not self.violations


class PolicyDecisionInput(BaseModel):
    """Activate or reject ``version``; activation checks ``base_version`` is still active."""

    version: str
    base_version: str
    by: str
    note: str | None = None


class PolicyDecisionResult(BaseModel):
    version: str
    status: str  # the stored version's status afterwards
    note: str | None = None


class RecalibrationOutcome(StrEnum):
    NO_CHANGE = "no_change"
    APPLIED = "applied"  # within bounds, no gate
    APPROVED = "approved"  # through the gate
    REJECTED = "rejected"  # by the gate: rejected, expired or failed
    SUPERSEDED = "superseded"  # another version became active meanwhile


class RecalibrationResult(BaseModel):
    outcome: RecalibrationOutcome
    base_version: str
    version: str | None = None
    gate_id: str | None = None
    gate_status: str | None = None
    feedback: FeedbackUsage
    violations: list[str] = Field(default_factory=list)


def version_name(now: datetime) -> str:
    """The declared version of a recalibrated policy: when it was computed (UTC)."""
    return f"recal-{now:%Y%m%d-%H%M%S}"


def gate_id(version: str) -> str:
    """The apply gate's decision ID (``+`` is not allowed in decision IDs)."""
    return f"policy-{version.replace('+', '-')}"


def recalibrate(labels: Sequence[Label], policy: Policy, *, config: RecalibrationConfig,
                version: str, since: datetime, until: datetime) -> Recalibration:
    """Certify every non-critical scope with labels and build the proposed policy.

    ``version`` becomes the proposal's declared version (its full version adds
    the content digest). Labels of the policy-change gate itself are ignored.
    """
    labels = [lb for lb in labels if lb.task_type != POLICY_CHANGE_TASK_TYPE]
    thresholds, risk = policy.thresholds, policy.risk
    entries: list[ThresholdChange] = []
    for name in sorted({lb.task_type for lb in labels}):
        static = risk.task_types.get(name, risk.default)
        if static is RiskLevel.CRITICAL:
            continue
        old = thresholds.task_types.get(name, thresholds.by_risk[static])
        scoped = [lb for lb in labels if lb.task_type == name]
        entries.append(_scope("task_type", name, static, old, scoped, config))
    for level in (RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH):
        # The labels this bar actually judged: task types without a bar of their own,
        # and decisions whose modifiers raised them to this level.
        scoped = [lb for lb in labels if lb.risk is level and (
            lb.task_type not in thresholds.task_types
            or lb.risk.rank > risk.task_types.get(lb.task_type, risk.default).rank)]
        if scoped:
            entries.append(_scope("risk", level.value, level, thresholds.by_risk[level],
                                  scoped, config))
    reviews = [lb for lb in labels if lb.source == "review"]
    diff = PolicyDiff(
        base_version=policy.full_version, max_error=config.max_error, delta=config.delta,
        feedback=FeedbackUsage(
            labels=len(labels), reviews_used=len(reviews),
            corrections_used=sum(not lb.correct for lb in reviews),
            audits_used=len(labels) - len(reviews), since=since, until=until),
        entries=entries)
    if not diff.changes:
        return Recalibration(policy=None, diff=diff)
    data = policy.model_dump(mode="json")
    data["version"] = version
    for entry in diff.changes:
        section = "task_types" if entry.kind == "task_type" else "by_risk"
        data["thresholds"][section][entry.name] = entry.new
    return Recalibration(policy=parse_policy(data, source="recalibrated policy"), diff=diff)


def bound_violations(diff: PolicyDiff, bounds: RecalibrationBounds) -> list[str]:
    """Why the diff needs an operator; empty when it may be applied at once."""
    changes = diff.changes
    problems = [] if bounds.auto_apply or not changes else ["auto-apply is off"]
    for entry in changes:
        step = abs(entry.new - entry.old)
        if entry.risk is RiskLevel.CRITICAL:
            problems.append(f"{entry.scope}: critical thresholds never change unattended")
        if entry.certified is None or entry.new < entry.certified - _EPS:
            problems.append(f"{entry.scope}: {entry.new:.2f} is not a certified threshold")
        if step > bounds.max_step + _EPS:
            problems.append(f"{entry.scope}: moves {step:.2f} ({entry.old:.2f} -> "
                            f"{entry.new:.2f}), more than {bounds.max_step:.2f}")
    return problems


def within_bounds(diff: PolicyDiff, bounds: RecalibrationBounds) -> bool:
    return not bound_violations(diff, bounds)


def render_diff(diff: PolicyDiff, *, proposed_version: str,
                violations: Sequence[str] = ()) -> str:
    """The diff as the plain-text table a reviewer reads (the review page shows it
    in a monospace block, so columns line up)."""
    fb = diff.feedback
    lines = [f"Proposed policy {proposed_version}", f"replaces        {diff.base_version}",
             f"Evidence: {fb.labels} labeled decisions ({fb.reviews_used} reviews, of which "
             f"{fb.corrections_used} corrections; {fb.audits_used} audits), "
             f"{fb.since:%Y-%m-%d} to {fb.until:%Y-%m-%d}.",
             f"Target: error among autonomous decisions <= {diff.max_error:.1%} with "
             f"probability {1 - diff.delta:.0%}.", ""]
    rows = [["scope", "threshold", "automation", "error (observed, bound)", "n"]]
    rows += [[e.scope, f"{e.old:.2f} -> {e.new:.2f}" if e.changed else f"{e.old:.2f} (kept)",
              f"{_pct(e.old_automation)} -> {_pct(e.new_automation)}",
              f"{_err(e.old_error, e.old_error_bound)} -> {_err(e.new_error, e.new_error_bound)}",
              str(e.n)] for e in diff.entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    lines += ["", *(f"{e.scope}: {e.note}" for e in diff.entries)]
    if violations:
        lines += ["", "Needs approval because:", *(f"  - {v}" for v in violations)]
    lines += ["", "Approve to make this policy active; reject to keep the current one."]
    return "\n".join(lines)


def gate_context(diff: PolicyDiff, *, proposed_version: str) -> dict[str, JsonValue]:
    """Flat key/value figures for the gate decision's context (one line per scope)."""
    context: dict[str, JsonValue] = {
        "requested_by": RECALIBRATION_ACTOR, "base_version": diff.base_version,
        "proposed_version": proposed_version, "labels": diff.feedback.labels,
        "reviews_used": diff.feedback.reviews_used, "audits_used": diff.feedback.audits_used,
        "max_error": diff.max_error, "delta": diff.delta}
    for e in diff.changes:
        context[f"threshold {e.scope}"] = (
            f"{e.old:.2f} -> {e.new:.2f}; automation {_pct(e.old_automation)} -> "
            f"{_pct(e.new_automation)}; error {_err(e.old_error, e.old_error_bound)} -> "
            f"{_err(e.new_error, e.new_error_bound)}; n={e.n}")
    return context


def proposal_record(diff: PolicyDiff, *, violations: Sequence[str],
                    workflow_id: str) -> dict[str, Any]:
    """What the policy-version store keeps as the proposal: diff, figures, feedback used."""
    return {"diff": diff.model_dump(mode="json"), "violations": list(violations),
            "workflow_id": workflow_id}


def feedback_usage(proposal: str | None) -> FeedbackUsage | None:
    """The feedback a stored proposal used, or None when it is not a recalibration's."""
    if not proposal:
        return None
    try:
        feedback = json.loads(proposal).get("diff", {}).get("feedback")
        return FeedbackUsage.model_validate(feedback) if feedback else None
    except (ValueError, AttributeError):
        return None


# ------------------------------------------------------------------ internals

def _scope(kind: Literal["task_type", "risk"], name: str, risk: RiskLevel, old: float,
           labels: Sequence[Label], config: RecalibrationConfig) -> ThresholdChange:
    from hitl.calibration import certify_threshold

    confidence = [lb.confidence for lb in labels]
    correct = [lb.correct for lb in labels]
    result = certify_threshold(confidence, correct, max_error=config.max_error,
                               delta=config.delta, candidates=_GRID)
    if result.threshold is not None:
        new = result.threshold
        note = (f"certified at {new:.2f}: bound {result.upper_bound or 0:.2%} <= "
                f"{config.max_error:.1%}")
    elif result.more_labels_needed is None:
        new, note = UNCERTIFIABLE, ("no threshold meets the target, even the most confident "
                                    "decisions err too often: every decision to a person")
    else:
        new = old
        note = f"kept: too few labels (about {result.more_labels_needed} more needed)"
    old_auto, old_err, old_bound = _evaluate(confidence, correct, old, config.delta)
    new_auto, new_err, new_bound = _evaluate(confidence, correct, new, config.delta)
    if result.threshold is not None and abs(new - result.threshold) <= _EPS:
        new_bound = result.upper_bound
    return ThresholdChange(
        kind=kind, name=name, risk=risk, old=old, new=new, certified=result.threshold,
        n=len(labels), old_automation=old_auto, new_automation=new_auto, old_error=old_err,
        new_error=new_err, old_error_bound=old_bound, new_error_bound=new_bound, note=note)


def _evaluate(confidence: Sequence[float], correct: Sequence[bool], threshold: float,
              delta: float) -> tuple[float, float | None, float | None]:
    """Automation rate, observed error and its upper bound at ``threshold``."""
    from hitl.calibration import clopper_pearson_upper

    chosen = [ok for c, ok in zip(confidence, correct, strict=True) if c >= threshold]
    if not chosen:
        return 0.0, None, None
    errors = sum(not ok for ok in chosen)
    return (len(chosen) / len(confidence), errors / len(chosen),
            clopper_pearson_upper(errors, len(chosen), delta))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _err(observed: float | None, bound: float | None) -> str:
    if observed is None:
        return "-"
    return f"{observed:.1%}" + ("" if bound is None else f" (<= {bound:.1%})")
