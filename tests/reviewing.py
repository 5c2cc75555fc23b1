"""Reviewer actions as the tests send them: naming the content, signed like hitl does.

Test reviewers get deterministic tokens (``token_for``), so a helper can sign any
registered reviewer's action without threading tokens through every fixture.
``approve``/``reject``/``signal`` fill in the digest of the content up for approval
now (a test that means to name other content passes ``content_sha256`` itself) and
sign with the reviewer's token unless the action already carries a proof.
"""

from __future__ import annotations

import hashlib
from typing import TypeVar

from hitl.client import HitlClient
from hitl.content import Content
from hitl.errors import TemporalUnavailable
from hitl.review import ApproveInput, RejectInput, ReviewAck

ReviewT = TypeVar("ReviewT", ApproveInput, RejectInput)


def token_for(name: str) -> str:
    """The token a test reviewer called ``name`` is registered with."""
    return "hitl_test-" + hashlib.sha256(f"hitl test reviewer {name}".encode()).hexdigest()


async def named(hitl: HitlClient, decision_id: str, review: ReviewT) -> ReviewT:
    """``review`` naming the content up for approval now, if it names none."""
    if review.content_sha256 is not None:
        return review
    try:
        content = await hitl.content(decision_id)
    except TemporalUnavailable:  # no worker yet (actions queued before one starts)
        request = await hitl.request(decision_id)
        content = Content.of(request.output, request.action)
    return review.model_copy(update={"content_sha256": content.sha256})


async def approve(hitl: HitlClient, decision_id: str, review: ApproveInput,
                  token: str | None = None) -> ReviewAck:
    review = await named(hitl, decision_id, review)
    return await hitl.approve(decision_id, review, token=token or token_for(review.reviewer))


async def reject(hitl: HitlClient, decision_id: str, review: RejectInput,
                 token: str | None = None) -> ReviewAck:
    review = await named(hitl, decision_id, review)
    return await hitl.reject(decision_id, review, token=token or token_for(review.reviewer))


async def signal(hitl: HitlClient, decision_id: str, name: str,
                 review: ApproveInput | RejectInput, token: str | None = None) -> None:
    review = await named(hitl, decision_id, review)
    await hitl.signal(decision_id, name, review, token=token or token_for(review.reviewer))
