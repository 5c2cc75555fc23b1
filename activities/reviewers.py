"""Reviewer authorization as a local activity, so its answer is in history.

Checked at the moment a review arrives: a reviewer disabled or re-roled while
a decision waits is judged by what holds now, and replay reads the recorded
answer instead of the table.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from temporalio import activity

from hitl.payloads import AuthorizeInput, AuthorizeResult
from hitl.reviewers import get_reviewer
from hitl.store import session_scope


class ReviewerActivities:
    def __init__(self, *, engine: Engine) -> None:
        self._engine = engine

    @activity.defn(name="authorize_review")
    def authorize_review(self, data: AuthorizeInput) -> AuthorizeResult:
        with session_scope(self._engine) as session:
            reviewer = get_reviewer(session=session, name=data.reviewer)
        if reviewer is None:
            return AuthorizeResult(allowed=False, reason=f"unknown reviewer {data.reviewer!r}")
        if not reviewer.active:
            return AuthorizeResult(allowed=False, reason=f"reviewer {data.reviewer!r} is disabled")
        if not reviewer.may_decide(data.risk):
            return AuthorizeResult(
                allowed=False,
                reason=f"reviewer {data.reviewer!r} may not decide {data.risk.value}-risk "
                       f"decisions (allowed: {reviewer.risks})")
        return AuthorizeResult(allowed=True)
