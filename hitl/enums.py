"""The small vocabularies every layer shares: risk, zone, status, phases."""

from __future__ import annotations

from enum import StrEnum


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RISK_ORDER.index(self)

    def at_least(self, other: RiskLevel) -> RiskLevel:
        """The higher of the two levels: modifiers only ever raise risk."""
        return self if self.rank >= other.rank else other


_RISK_ORDER = [RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH, RiskLevel.CRITICAL]


class Zone(StrEnum):
    """Routing zones of the risk matrix."""

    AUTO = "auto"
    AUTO_AUDIT = "auto_audit"
    QUEUE = "queue"
    ESCALATE = "escalate"

    @property
    def needs_review(self) -> bool:
        return self in (Zone.QUEUE, Zone.ESCALATE)


class DecisionStatus(StrEnum):
    """Where a decision is. ``screening`` and ``failed`` extend the issue's list:
    the cascade has to be somewhere before routing, and an action target that
    refuses an approved action (4xx) must not be reported as executed."""

    SCREENING = "screening"
    PENDING_REVIEW = "pending_review"
    PROVISIONAL = "provisional"
    EXECUTED = "executed"
    REVISED = "revised"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"

    @property
    def is_open(self) -> bool:
        """Still accepting reviews."""
        return self in (
            DecisionStatus.SCREENING,
            DecisionStatus.PENDING_REVIEW,
            DecisionStatus.PROVISIONAL,
        )


class LayerStatus(StrEnum):
    """Outcome of one cascade layer. ``skipped`` is never read as ``passed``."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"


class ExecutionPhase(StrEnum):
    """What a delivery to the action target means; part of the idempotency key."""

    EXECUTE = "execute"
    PROVISIONAL = "provisional"
    CONFIRM = "confirm"
    REVISION = "revision"


class Verdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class RefusalCode(StrEnum):
    """Why a reviewer action was refused. The API answers 409 for the first three
    (reload and look again) and 403 for the rest (not yours to decide)."""

    DECIDED = "decided"  # the decision is decided or finished
    NOT_WAITING = "not_waiting"  # routed autonomously, or being regenerated
    CONTENT_CHANGED = "content_changed"  # the content up for approval is not what was shown
    UNPROVEN = "unproven"  # no valid proof of who sent it
    FORBIDDEN = "forbidden"  # role, self-approval, a second vote, too many edits

    @property
    def is_conflict(self) -> bool:
        return self in (RefusalCode.DECIDED, RefusalCode.NOT_WAITING,
                        RefusalCode.CONTENT_CHANGED)


class ErrorCategory(StrEnum):
    """Why a reviewer rejected; the feedback loop clusters on these."""

    HALLUCINATION = "hallucination"
    WRONG_LABEL = "wrong_label"
    POLICY_VIOLATION = "policy_violation"
    UNSAFE_ACTION = "unsafe_action"
    WRONG_AMOUNT = "wrong_amount"
    TONE = "tone"
    INCOMPLETE = "incomplete"
    IRRELEVANT = "irrelevant"
    OTHER = "other"
