"""Who sent a reviewer action, as a local activity, so the answer is in history.

Checked at the moment the action arrives: the proof over the whole action
(``hitl.proofs``) against the reviewer's public key on file, then whether the
reviewer is active, unexpired and may decide the decision's risk now. A role
change or a rotated token applies to decisions already waiting, and replay
reads the recorded answer instead of the table.

``HITL_VERDICT_PROOFS=off`` skips the proof (the deployment trusts everyone who
can reach the Temporal frontend, see docs/SECURITY.md); every other check stays.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from temporalio import activity

from hitl import proofs
from hitl.enums import RefusalCode, Verdict
from hitl.payloads import AuthorizeInput, AuthorizeResult
from hitl.reviewers import Reviewer, get_reviewer
from hitl.store import session_scope

SHOWN_NAME = 64  # characters of an unknown name repeated in a refusal


class ReviewerActivities:
    def __init__(self, *, engine: Engine, require_proofs: bool = True) -> None:
        self._engine = engine
        self._require_proofs = require_proofs

    @activity.defn(name="authorize_review")
    def authorize_review(self, data: AuthorizeInput) -> AuthorizeResult:
        with session_scope(self._engine) as session:
            reviewer = get_reviewer(session=session, name=data.reviewer)
            if reviewer is not None:
                session.expunge(reviewer)
        return self.judge(reviewer, data, now=datetime.now(UTC))

    def judge(self, reviewer: Reviewer | None, data: AuthorizeInput,
              *, now: datetime) -> AuthorizeResult:
        """The answer for ``data`` given the registry's row (pure, for tests)."""
        shown = data.reviewer[:SHOWN_NAME]
        if reviewer is None:
            return _refused(RefusalCode.UNPROVEN, f"unknown reviewer {shown!r}")
        if not reviewer.active:
            return _refused(RefusalCode.UNPROVEN, f"reviewer {reviewer.name!r} is disabled")
        if reviewer.expired(now):
            return _refused(RefusalCode.UNPROVEN, f"reviewer {reviewer.name!r}'s token has "
                            "expired: hitl reviewers rotate " + reviewer.name)
        proven = False
        review = data.approval or data.rejection
        if self._require_proofs and data.decision_id is not None:
            if review is None:
                return _refused(RefusalCode.UNPROVEN, "no reviewer action to verify")
            if reviewer.verify_key is None:
                return _refused(RefusalCode.UNPROVEN, (
                    f"reviewer {reviewer.name!r} has no verification key on file yet: sign "
                    f"in to the review page once, or hitl reviewers rotate {reviewer.name}"))
            verdict = Verdict.APPROVE if data.approval is not None else Verdict.REJECT
            problem = proofs.check(review, decision_id=data.decision_id, verdict=verdict,
                                   verify_key_hex=reviewer.verify_key, now=now)
            if problem is not None:
                return _refused(RefusalCode.UNPROVEN, problem)
            proven = True
        elif not self._require_proofs:
            proven = True
        if not reviewer.may_decide(data.risk):
            return AuthorizeResult(
                allowed=False, code=RefusalCode.FORBIDDEN, reviewer=reviewer.name,
                proven=proven, risk=data.risk,
                reason=f"reviewer {reviewer.name!r} may not decide {data.risk.value}-risk "
                       f"decisions (allowed: {reviewer.risks})")
        return AuthorizeResult(allowed=True, reviewer=reviewer.name, proven=proven,
                               risk=data.risk)


def _refused(code: RefusalCode, reason: str) -> AuthorizeResult:
    return AuthorizeResult(allowed=False, code=code, reason=reason)
