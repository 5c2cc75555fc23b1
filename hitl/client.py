"""The typed client services and reviewers use: submit, decide, review, inspect.

One path to Temporal for the CLI, the HTTP API and the tests. Submitting is
idempotent on the decision ID: the same payload attaches to the one workflow
(even after it finished), a different payload is a ``DecisionConflict``.
Callers without an event loop use the blocking ``hitl.client_sync.SyncHitlClient``.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from hitl import proofs
from hitl import search_attributes as sa
from hitl.connection import connect
from hitl.content import Content
from hitl.enums import DecisionStatus, Verdict
from hitl.errors import (
    PAYLOAD_REFUSED_TYPE,
    REVIEW_REFUSED_TYPE,
    DecisionClosed,
    DecisionConflict,
    DecisionNotFound,
    DecisionUnreadable,
    InputError,
    ReviewRefused,
    TemporalUnavailable,
)
from hitl.proofs import ReviewT
from hitl.request import DecisionRequest
from hitl.review import ApproveInput, RejectInput, ReviewAck
from hitl.settings import DEFAULT_TASK_QUEUE, Settings
from hitl.state import DecisionState
from hitl.summaries import details_for, summary_for

WORKFLOW_NAME = "DecisionWorkflow"
MEMO_DIGEST = "request_sha256"
UNSET_PRIORITY = 9
QUERY_TIMEOUT = timedelta(seconds=10)  # a running decision's state is answered by a worker
OPEN_STATUSES = (DecisionStatus.SCREENING, DecisionStatus.PENDING_REVIEW,
                 DecisionStatus.PROVISIONAL)


class Submission(BaseModel):
    decision_id: str
    run_id: str | None
    attached: bool  # True when the decision already existed


class QueueItem(BaseModel):
    decision_id: str
    task_type: str | None
    status: str | None
    zone: str | None
    risk: str | None
    confidence: float | None
    priority: int | None
    sla_deadline: datetime | None
    overdue: bool
    summary: str | None = None


class HitlClient:
    def __init__(self, client: Client, *, task_queue: str = DEFAULT_TASK_QUEUE,
                 query_timeout: timedelta = QUERY_TIMEOUT) -> None:
        self.temporal = client
        self.task_queue = task_queue
        self.query_timeout = query_timeout

    @classmethod
    async def connect(cls, settings: Settings) -> HitlClient:
        return cls(await connect(settings), task_queue=settings.task_queue)

    def _handle(self, decision_id: str) -> WorkflowHandle[Any, DecisionState]:
        return self.temporal.get_workflow_handle(decision_id, result_type=DecisionState)

    async def submit(self, request: DecisionRequest) -> Submission:
        digest = request.payload_sha256()
        attached = False
        try:
            handle = await self.temporal.start_workflow(
                WORKFLOW_NAME, request, id=request.decision_id, task_queue=self.task_queue,
                result_type=DecisionState,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                memo={MEMO_DIGEST: digest},
                search_attributes=TypedSearchAttributes([
                    SearchAttributePair(sa.TASK_TYPE, request.task_type),
                    SearchAttributePair(sa.CONFIDENCE, request.confidence),
                    SearchAttributePair(sa.STATUS, DecisionStatus.SCREENING.value),
                ]),
                static_summary=summary_for(request),
                static_details=details_for(request),
            )
        except WorkflowAlreadyStartedError:
            # Closed already (REJECT_DUPLICATE): never start it twice, compare payloads.
            handle = self._handle(request.decision_id)
            attached = True
        if not attached and _started_new(handle):
            return Submission(decision_id=request.decision_id, run_id=handle.result_run_id,
                              attached=False)
        try:
            description = await handle.describe()
        except RPCError as exc:
            raise _translate(exc, request.decision_id) from exc
        try:
            existing = await description.memo_value(MEMO_DIGEST, default=None)
        except ApplicationError as exc:  # started by a writer without the keys (hitl.codec)
            if exc.type != PAYLOAD_REFUSED_TYPE:
                raise
            existing = None
        if existing != digest:
            raise DecisionConflict(
                f"decision {request.decision_id} was already submitted with a different payload")
        return Submission(decision_id=request.decision_id, run_id=description.run_id,
                          attached=True)

    async def wait(self, decision_id: str, timeout: float | None = None) -> DecisionState:
        try:
            return await asyncio.wait_for(self._handle(decision_id).result(), timeout)
        except RPCError as exc:
            raise _translate(exc, decision_id) from exc

    async def decide(self, request: DecisionRequest, timeout: float | None = None) -> DecisionState:
        """Submit and wait for the outcome (the service's blocking call)."""
        await self.submit(request)
        return await self.wait(request.decision_id, timeout)

    async def status(self, decision_id: str) -> DecisionState:
        handle = self._handle(decision_id)
        try:
            description = await handle.describe()
            if description.status == WorkflowExecutionStatus.COMPLETED:
                return await handle.result()
            state: DecisionState = await handle.query("state", result_type=DecisionState,
                                                      rpc_timeout=self.query_timeout)
            return state
        except RPCError as exc:
            raise _translate(exc, decision_id) from exc
        except (WorkflowQueryFailedError, WorkflowQueryRejectedError, ValueError,
                TypeError) as exc:  # a failed query, or a state that does not decode
            raise DecisionUnreadable(f"decision {decision_id}: its state cannot be read "
                                     f"({type(exc).__name__}); see it in the Temporal UI"
                                     ) from exc

    async def request(self, decision_id: str) -> DecisionRequest:
        """The request as it was submitted, read from the decision's first history event."""
        handle = self.temporal.get_workflow_handle(decision_id)
        try:
            async for event in handle.fetch_history_events(page_size=1):
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                decoded = await self.temporal.data_converter.decode(payloads,
                                                                    [DecisionRequest])
                if len(decoded) != 1 or not isinstance(decoded[0], DecisionRequest):
                    break
                return decoded[0]
        except RPCError as exc:
            raise _translate(exc, decision_id) from exc
        except (ValueError, TypeError, AttributeError, ApplicationError) as exc:
            raise DecisionUnreadable(f"decision {decision_id}: its request cannot be read "
                                     f"({type(exc).__name__})") from exc
        raise DecisionUnreadable(f"{decision_id} is not a decision hitl can read")

    async def content(self, decision_id: str) -> Content:
        """The content up for approval now (a reviewer's edit, else the model's proposal)
        with the digest an approval or rejection of it must name."""
        state = await self.status(decision_id)
        current = state.up_for_approval
        if current is not None:
            return current
        request = await self.request(decision_id)  # not routed yet, or reviewed before binding
        return Content.of(request.output, request.action)

    async def approve(self, decision_id: str, review: ApproveInput, *,
                      token: str | None = None) -> ReviewAck:
        """Approve (or edit and approve) the content ``review.content_sha256`` names.

        Args:
            token: the reviewer's token; the action is signed with it (``hitl.proofs``)
                unless it already carries a proof.
        """
        return await self._update(decision_id, "approve", _signed(
            review, decision_id=decision_id, verdict=Verdict.APPROVE, token=token))

    async def reject(self, decision_id: str, review: RejectInput, *,
                     token: str | None = None) -> ReviewAck:
        """Reject the content ``review.content_sha256`` names; ``token`` as for approve."""
        return await self._update(decision_id, "reject", _signed(
            review, decision_id=decision_id, verdict=Verdict.REJECT, token=token))

    async def signal(self, decision_id: str, name: str, review: ApproveInput | RejectInput,
                     *, token: str | None = None) -> None:
        """Fire-and-forget variant (what the ``temporal`` CLI does); ``token`` as for approve."""
        signed = _signed(review, decision_id=decision_id, token=token,
                         verdict=Verdict.APPROVE if name == "approve" else Verdict.REJECT)
        try:
            await self._handle(decision_id).signal(name, signed)
        except RPCError as exc:
            raise await self._closed_or_missing(exc, decision_id) from exc

    async def _closed_or_missing(self, exc: RPCError, decision_id: str) -> Exception:
        """NOT_FOUND on a signal or update means finished or never existed: tell which."""
        if exc.status != RPCStatusCode.NOT_FOUND:
            return _translate(exc, decision_id)
        try:
            description = await self._handle(decision_id).describe()
        except RPCError:
            return DecisionNotFound(f"no decision with ID {decision_id}")
        return DecisionClosed(f"decision {decision_id} has already finished "
                              f"({description.status.name.lower() if description.status else '?'})")

    async def _update(self, decision_id: str, name: str,
                      review: ApproveInput | RejectInput) -> ReviewAck:
        try:
            ack: ReviewAck = await self._handle(decision_id).execute_update(
                name, review, result_type=ReviewAck)
            return ack
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            message = str(cause.message if isinstance(cause, ApplicationError) else cause)
            code = _refusal_code(cause)
            raise ReviewRefused(message, field="reviewer", code=code) from exc
        except RPCError as exc:
            raise await self._closed_or_missing(exc, decision_id) from exc

    async def pending(self, *, zone: str | None = None, risk: str | None = None,
                      task_type: str | None = None, limit: int = 100) -> list[QueueItem]:
        """Decisions waiting for a person, most urgent first (priority, then SLA)."""
        clauses = ['ExecutionStatus = "Running"',
                   f'{sa.STATUS.name} IN ("pending_review", "provisional")']
        for key, value in ((sa.ZONE, zone), (sa.RISK, risk), (sa.TASK_TYPE, task_type)):
            if value is not None:
                clauses.append(f'{key.name} = "{quote_query_value(value)}"')
        now = datetime.now(UTC)
        items = [queue_item(execution, now) async for execution
                 in self.temporal.list_workflows(" AND ".join(clauses))]
        items.sort(key=queue_sort_key)
        return items[:limit]


def _signed(review: ReviewT, *, decision_id: str, verdict: Verdict,
            token: str | None) -> ReviewT:
    if review.content_sha256 is None:
        raise InputError("content_sha256: required: the digest of the content reviewed "
                         "(HitlClient.content, or hitl status ID)", field="content_sha256")
    if token is None or review.proof is not None:
        return review
    if review.request_id is None:  # one per action: a proof replayed later is a duplicate
        review = review.model_copy(update={"request_id": str(uuid.uuid4())})
    return proofs.sign(review, decision_id=decision_id, verdict=verdict, token=token)


def _refusal_code(cause: BaseException | None) -> str | None:
    """The workflow's refusal code (``RefusalCode``), carried as the failure's one
    detail; None for refusals from workflows that predate codes."""
    if not isinstance(cause, ApplicationError) or cause.type != REVIEW_REFUSED_TYPE:
        return None
    details = cause.details
    return details[0] if details and isinstance(details[0], str) else None


def _started_new(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether start_workflow created the run (so its memo is ours): saves a
    describe round trip on the common path. The SDK keeps the start response on
    the handle; without it we fall back to describing the workflow."""
    response = getattr(handle, "_start_workflow_response", None)
    return bool(getattr(response, "started", False))


def queue_item(execution: WorkflowExecution, now: datetime) -> QueueItem:
    """A waiting decision as visibility shows it (its search attributes)."""
    attrs = execution.typed_search_attributes
    deadline = attrs.get(sa.SLA_DEADLINE)
    status = attrs.get(sa.STATUS)
    return QueueItem(
        decision_id=execution.id, task_type=attrs.get(sa.TASK_TYPE), status=status,
        zone=attrs.get(sa.ZONE), risk=attrs.get(sa.RISK), confidence=attrs.get(sa.CONFIDENCE),
        priority=attrs.get(sa.PRIORITY), sla_deadline=deadline,
        overdue=(deadline is not None and deadline < now
                 and status == DecisionStatus.PENDING_REVIEW.value),
    )


def queue_sort_key(item: QueueItem) -> tuple[int, datetime]:
    """Most urgent first: priority (unset last), then the earliest SLA deadline."""
    return (item.priority if item.priority is not None else UNSET_PRIORITY,
            item.sla_deadline or datetime.max.replace(tzinfo=UTC))


def quote_query_value(value: str) -> str:
    """A value safe inside a double-quoted visibility query literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _translate(exc: RPCError, decision_id: str) -> Exception:
    """A HitlError for every RPC failure: callers (the API, the CLI) answer each one
    clearly, never with a 500 or a traceback."""
    if exc.status == RPCStatusCode.NOT_FOUND:
        return DecisionNotFound(f"no decision with ID {decision_id}")
    if exc.status == RPCStatusCode.FAILED_PRECONDITION:
        return DecisionUnreadable(f"decision {decision_id}: Temporal cannot answer for it now "
                                  f"({exc.message[:200]}); see it in the Temporal UI")
    if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.UNAVAILABLE,
                      RPCStatusCode.CANCELLED):
        # A running decision's state is a query a worker answers: with no worker
        # polling its task queue, the call times out (the SDK's own deadline reports
        # CANCELLED, "Timeout expired") rather than failing.
        return TemporalUnavailable(
            f"decision {decision_id}: Temporal or a worker did not answer in time "
            f"({exc.status.name}); is a worker running for its task queue?")
    return TemporalUnavailable(f"decision {decision_id}: Temporal answered {exc.status.name}: "
                               f"{exc.message[:200]}")
