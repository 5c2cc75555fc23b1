"""Decisions: submit, read, and the four reviewer actions.

Submitting and reading a decision's state are service-facing and open: they
grant nothing a Temporal client connection does not (keep the API on the same
trusted network as the Temporal frontend, as docker-compose does). Everything a
reviewer does needs a reviewer identity: the action names the content the
reviewer was shown and is signed here with the reviewer's key, and the workflow
verifies both before it counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Response, status
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from hitl import proofs
from hitl.api.auth import CurrentReviewer, Principal, current_reviewer
from hitl.api.deps import Services, get_services, strict_body
from hitl.api.models import (
    ApproveBody,
    EditBody,
    FlagBody,
    RejectBody,
    ReviewBody,
    ReviewContent,
    ReviewView,
)
from hitl.api.similar import similar_decisions
from hitl.client import Submission
from hitl.content import Content, diff
from hitl.enums import RefusalCode, Verdict
from hitl.errors import REVIEW_REFUSED_TYPE, ReviewRefused
from hitl.request import DecisionRequest
from hitl.review import ApproveInput, RejectInput, ReviewAck
from hitl.state import DecisionState

MAX_REQUEST_ID = 200

router = APIRouter(prefix="/api/decisions", tags=["decisions"])
DecisionIdPath = Annotated[str, Path(min_length=1, max_length=200)]
Deps = Annotated[Services, Depends(get_services)]


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"type": "object", "properties": {"detail": {"type": "string"}}}}}}


# FastAPI answers a body it cannot even decode (not UTF-8) with this 400, before validation.
BAD_BODY = _problem("the body is not UTF-8 JSON")
REVIEW_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _problem("no or an invalid reviewer token / session"),
    403: _problem("refused by the workflow (role, self-approval, four-eyes) or missing CSRF "
                  "token; the detail says which"),
    404: _problem("no decision with this ID"),
    409: _problem("the decision is already decided or finished, or the content up for "
                  "approval is not the one named (reload and look again)"),
}
ACTION_RESPONSES = {**REVIEW_RESPONSES, 400: BAD_BODY}
CONFLICTS = frozenset(code.value for code in RefusalCode if code.is_conflict)


def _signed_in_then_strict(model: type[ReviewBody]) -> list[Any]:
    """Who is acting first (401 before any 422), then the body's strict check; the
    route's own reviewer parameter reuses the cached first."""
    return [Depends(current_reviewer), strict_body(model)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Submission,
             responses={200: {"model": Submission, "description": "already submitted with the "
                              "same payload: attached to the existing decision"},
                        400: BAD_BODY,
                        409: _problem("same decision ID, different payload")},
             dependencies=[strict_body(DecisionRequest)])
async def submit(request: DecisionRequest, response: Response, services: Deps) -> Submission:
    """Submit a decision. Idempotent on ``decision_id``."""
    services.check_outbound(request)
    submission = await services.hitl.submit(request)
    services.remember(request)
    response.headers["Location"] = f"/api/decisions/{request.decision_id}"
    if submission.attached:
        response.status_code = status.HTTP_200_OK
    return submission


@router.get("/{decision_id}", response_model=DecisionState,
            responses={404: _problem("no decision with this ID"),
                       503: _problem("Temporal, or a worker to answer for the decision, "
                                     "did not respond in time")})
async def get_state(decision_id: DecisionIdPath, services: Deps) -> DecisionState:
    """A decision's full state: status, zone, risk, why, reviews, deliveries."""
    return await services.hitl.status(decision_id)


@router.get("/{decision_id}/review", response_model=ReviewView, responses=REVIEW_RESPONSES)
async def review_view(decision_id: DecisionIdPath, reviewer: CurrentReviewer,
                      services: Deps) -> ReviewView:
    """What the review page shows: state, the request, and similar past decisions."""
    state, request = await asyncio.gather(services.hitl.status(decision_id),
                                          _request_of(services, decision_id))
    content = _content(state, request)
    similar = await asyncio.to_thread(
        similar_decisions, engine=services.engine, decision_id=decision_id,
        task_type=request.task_type, confidence=state.confidence, output=content.output)
    return ReviewView(state=state, request=request, content=content, similar=similar)


def _content(state: DecisionState, request: DecisionRequest) -> ReviewContent:
    """What is up for approval: the edit, else the current attempt's proposal (the
    request itself for a decision routed before content binding)."""
    proposal = state.proposal or Content.of(request.output, request.action)
    current = state.edit or proposal
    return ReviewContent(sha256=current.sha256, output=current.output, action=current.action,
                         edited_by=current.edited_by, proposal_sha256=proposal.sha256,
                         diff=diff(proposal, current), risk=current.risk or state.risk,
                         rule_failures=current.rule_failures)


@router.post("/{decision_id}/approve", response_model=ReviewAck, responses=ACTION_RESPONSES,
             dependencies=_signed_in_then_strict(ApproveBody))
async def approve(decision_id: DecisionIdPath, body: ApproveBody, reviewer: CurrentReviewer,
                  services: Deps) -> ReviewAck:
    """Approve the content named; the action runs once enough approvers approved it."""
    return await _act(services, decision_id, reviewer, _approval(reviewer.name, body))


@router.post("/{decision_id}/edit", response_model=ReviewAck, responses=ACTION_RESPONSES,
             dependencies=_signed_in_then_strict(EditBody))
async def edit_and_approve(decision_id: DecisionIdPath, body: EditBody,
                           reviewer: CurrentReviewer, services: Deps) -> ReviewAck:
    """Edit the content named (output and/or action) and approve the edit.

    The edit is screened again (rules, risk, judge): its risk never falls below the
    proposal's and sets how many approvers it needs, yours the first. Approvals of the
    content it replaces do not carry over."""
    if body.action is not None:
        services.check_urls({("action", "target_url"): body.action.target_url})
    review = _approval(reviewer.name, body, output=body.output, action=body.action,
                       flag_for_monitoring=body.flag_for_monitoring)
    return await _act(services, decision_id, reviewer, review)


@router.post("/{decision_id}/flag", response_model=ReviewAck, responses=ACTION_RESPONSES,
             dependencies=_signed_in_then_strict(FlagBody))
async def let_through_flagged(decision_id: DecisionIdPath, body: FlagBody,
                              reviewer: CurrentReviewer, services: Deps) -> ReviewAck:
    """Let it through, but flag the decision for monitoring."""
    review = _approval(reviewer.name, body, flag_for_monitoring=True)
    return await _act(services, decision_id, reviewer, review)


@router.post("/{decision_id}/reject", response_model=ReviewAck, responses=ACTION_RESPONSES,
             dependencies=_signed_in_then_strict(RejectBody))
async def reject(decision_id: DecisionIdPath, body: RejectBody, reviewer: CurrentReviewer,
                 services: Deps) -> ReviewAck:
    """Reject with feedback: reason, the correct answer, an error category."""
    review = RejectInput(
        reviewer=reviewer.name, reason=body.reason, correct_answer=body.correct_answer,
        error_category=body.error_category, time_on_page_seconds=body.time_on_page_seconds,
        content_sha256=body.content_sha256,
        request_id=_scoped_request_id(reviewer.name, body.request_id))
    return await _act(services, decision_id, reviewer, review)


# ------------------------------------------------------------------ helpers

def _approval(reviewer: str, body: ReviewBody, **changes: Any) -> ApproveInput:
    return ApproveInput(reviewer=reviewer, reason=body.reason,
                        time_on_page_seconds=body.time_on_page_seconds,
                        content_sha256=body.content_sha256,
                        request_id=_scoped_request_id(reviewer, body.request_id), **changes)


def _scoped_request_id(reviewer: str, request_id: str | None) -> str:
    """The caller's idempotency key, scoped to the reviewer: the workflow deduplicates
    on it alone, and one reviewer's key must never answer for another's action."""
    scoped = f"{reviewer}:{request_id or uuid.uuid4().hex}"
    if len(scoped) > MAX_REQUEST_ID:
        scoped = "h:" + hashlib.sha256(scoped.encode()).hexdigest()
    return scoped


async def _act(services: Services, decision_id: str, reviewer: Principal,
               review: ApproveInput | RejectInput) -> ReviewAck:
    """Sign ``review`` with the reviewer's key and send it; a refusal is 409 when the
    reviewer should reload and look again, else 403."""
    try:
        if isinstance(review, ApproveInput):
            return await services.hitl.approve(decision_id, proofs.sign_with(
                reviewer.key, review, decision_id=decision_id, verdict=Verdict.APPROVE))
        return await services.hitl.reject(decision_id, proofs.sign_with(
            reviewer.key, review, decision_id=decision_id, verdict=Verdict.REJECT))
    except ReviewRefused as exc:
        if exc.code is not None:
            conflict = exc.code in CONFLICTS
        else:  # a decision reviewed before refusal codes
            conflict = await _decided(services, decision_id, exc)
        code = status.HTTP_409_CONFLICT if conflict else status.HTTP_403_FORBIDDEN
        raise HTTPException(code, str(exc)) from exc


async def _decided(services: Services, decision_id: str, exc: ReviewRefused) -> bool:
    """Whether a refusal means "already decided" (409) rather than "not you" (403).

    The update validator refuses only decided decisions, so any refusal not
    raised by the handler is one. The handler's own refusals include a decision
    decided by a concurrent review while this one was being authorized; the
    state tells those apart structurally, without matching on messages.
    """
    failure = exc.__cause__
    cause = failure.cause if isinstance(failure, WorkflowUpdateFailedError) else None
    if not (isinstance(cause, ApplicationError) and cause.type == REVIEW_REFUSED_TYPE):
        return True
    state = await services.hitl.status(decision_id)
    accepted = [r for r in state.reviews if r.accepted]
    return (not state.status.is_open
            or any(r.verdict is Verdict.REJECT for r in accepted)
            or len(state.approved_by) >= state.approvals_required)


async def _request_of(services: Services, decision_id: str) -> DecisionRequest:
    """The submitted request (cached: requests never change once submitted)."""
    cached = services.requests.get(decision_id)
    if cached is not None:
        return cached
    request = await services.hitl.request(decision_id)
    services.remember(request)
    return request
