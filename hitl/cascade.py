"""Results of the cascade's layers, as they are recorded in workflow history.

Each layer's result is data, not a recomputation: replaying a decision reads
the rules' and the judge's verdicts back from history, so changing a rule or a
threshold later never changes what an old decision did.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from hitl.enums import LayerStatus, RiskLevel, Zone


class RuleFinding(BaseModel):
    rule: str
    passed: bool
    detail: str = ""


class SlaPolicy(BaseModel):
    """Review deadlines in seconds. ``0`` means deliver at once, review after."""

    queue_seconds: float = Field(ge=0)
    escalate_seconds: float = Field(ge=0)
    hard_deadline_seconds: float = Field(gt=0)


class Assessment(BaseModel):
    """The policy as it applied to one decision, fixed at screening time."""

    policy_version: str
    risk: RiskLevel
    risk_reasons: list[str]
    threshold: float
    threshold_source: str
    sla: SlaPolicy
    audit_sample_rate: float
    respond_now_min_confidence: float | None = None
    respond_now_risks: list[RiskLevel] = Field(default_factory=list)
    judge_configured: bool = False
    approvals_required: int = 1
    double_blind_rate: float = 0.0  # absent from histories recorded before blind review


class RulesResult(BaseModel):
    assessment: Assessment
    findings: list[RuleFinding]

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.findings)

    @property
    def failures(self) -> list[RuleFinding]:
        return [f for f in self.findings if not f.passed]


class JudgeVerdict(BaseModel):
    """The strict shape the judge must answer with; anything else fails closed.

    Validated by alias only (``pass``, as the prompt documents it): ``passed`` is an
    unknown field, not a second spelling. Strict types: ``"0.9"`` is not a score.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    passed: bool = Field(alias="pass")
    score: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    reasons: list[str] = Field(max_length=20)


class JudgeResult(BaseModel):
    status: LayerStatus
    score: float | None = None
    reasons: list[str] = Field(default_factory=list)
    model: str | None = None


class Routing(BaseModel):
    zone: Zone
    reasons: list[str]
    sla_seconds: float | None = None
