"""The idempotent executor: an approved action runs once per (decision, phase).

The ledger (``executions`` table, unique on decision and phase) is checked
before acting and written after. With the built-in ledger executor the row *is*
the action, so exactly-once holds outright. With the HTTP executor the target
receives ``Idempotency-Key: <decision_id>:<phase>``; a crash after the target
acted but before the row was written makes Temporal retry the POST with the
same key, so the action is not repeated where the target honours the key. A
target that ignores the key may see that one request twice: at-least-once.
The request goes only where the outbound policy allows (``hitl.outbound``): a
refused URL fails the decision (``OutboundRefused``, not retried), nothing sent.

The review that authorised a delivery rides along (``ExecuteInput.reviews``) and
is written first, so the audit chain holds the approval before the action it
released, and a gated decision needs one activity after its approval, not two.
Review writes are insert-once on (decision, request ID): retries never duplicate.
"""

from __future__ import annotations

import asyncio
import json

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity

from activities.remote import Peer, post
from activities.store import review_row
from hitl import metrics
from hitl.errors import EXECUTION_REJECTED_TYPE
from hitl.outbound import DEFAULT_POLICY, OutboundClient, OutboundPolicy, Resolver, system_resolver
from hitl.payloads import ExecuteInput, ExecutionResult, RecordReviewInput
from hitl.settings import Settings
from hitl.store import (
    ExecutionRow,
    find_execution,
    record_execution,
    record_review,
    session_scope,
)


def _result(row: ExecutionRow, *, deduplicated: bool, data: ExecuteInput) -> ExecutionResult:
    return ExecutionResult(
        decision_id=row.decision_id, phase=data.phase, executor=row.executor,
        deduplicated=deduplicated, status_code=row.status_code, executed_at=row.executed_at,
    )


# Redirects are not followed (a misconfigured target, or one pointing the worker
# elsewhere); 4xx other than timeouts, conflicts and rate limits will not improve by
# retrying.
TARGET = Peer(name="action target", refused="action target refused the action",
              refused_type=EXECUTION_REJECTED_TYPE, transient=frozenset({408, 409, 429}))


class ExecutorActivities:
    """``outbound`` bounds where actions may be sent (``HITL_OUTBOUND_ALLOW_HOSTS``)."""

    def __init__(self, *, engine: Engine, client: httpx.AsyncClient, settings: Settings,
                 outbound: OutboundPolicy = DEFAULT_POLICY,
                 resolver: Resolver = system_resolver) -> None:
        self._engine = engine
        self._outbound = OutboundClient(client=client, policy=outbound, resolver=resolver)
        self._settings = settings

    def _reviews_then_find(self, data: ExecuteInput) -> ExecutionRow | None:
        """The authorising reviews written (before any request: the approval is on file
        whatever the target does), then this phase's ledger row, if any."""
        with session_scope(self._engine) as session:
            _record_reviews(session, data.reviews)
            return find_execution(
                session=session, decision_id=data.decision_id, phase=data.phase.value)

    def _record(self, row: ExecutionRow,
                reviews: list[RecordReviewInput]) -> tuple[ExecutionRow, bool]:
        with session_scope(self._engine) as session:
            _record_reviews(session, reviews)
            return record_execution(session=session, execution=row)

    async def _post(self, data: ExecuteInput, url: str) -> int:
        body = {
            "decision_id": data.decision_id, "phase": data.phase.value,
            "action": data.action.model_dump(mode="json", exclude={"target_url"}),
            "output": data.output, "may_be_revised": data.may_be_revised,
        }
        # The body of the answer is not read: only its status matters.
        async with post(self._outbound, TARGET, url, json=body,
                        headers={"Idempotency-Key": data.idempotency_key},
                        http_timeout=self._settings.executor_timeout_seconds,
                        log={"decision_id": data.decision_id,
                             "phase": data.phase.value}) as response:
            return response.status_code

    @activity.defn(name="execute_action")
    async def execute_action(self, data: ExecuteInput) -> ExecutionResult:
        url = data.action.target_url
        if not url:
            # The ledger row is the action: one transaction looks it up and inserts it
            # (record_execution's insert-once), one thread hop instead of two.
            saved, inserted = await asyncio.to_thread(self._record, _row(data, None),
                                                      data.reviews)
            if not inserted:
                _deduplicated(data)
            return _result(saved, deduplicated=not inserted, data=data)
        existing = await asyncio.to_thread(self._reviews_then_find, data)
        if existing is not None:
            _deduplicated(data)
            return _result(existing, deduplicated=True, data=data)
        status_code = await self._post(data, url)
        saved, inserted = await asyncio.to_thread(self._record, _row(data, status_code), [])
        return _result(saved, deduplicated=not inserted, data=data)


def _record_reviews(session: Session, reviews: list[RecordReviewInput]) -> None:
    """The reviews that authorised a delivery, each insert-once (a retry adds nothing)."""
    for review in reviews:
        record_review(session=session, review=review_row(review))


def _row(data: ExecuteInput, status_code: int | None) -> ExecutionRow:
    url = data.action.target_url
    return ExecutionRow(
        decision_id=data.decision_id, phase=data.phase.value,
        executor="http" if url else "ledger", action_type=data.action.type,
        idempotency_key=data.idempotency_key, target_url=url, status_code=status_code,
        output=data.output, params_json=json.dumps(data.action.params, sort_keys=True),
    )


def _deduplicated(data: ExecuteInput) -> None:
    metrics.count(activity.metric_meter(), metrics.EXECUTOR_DEDUP, {"phase": data.phase.value})
    activity.logger.info("execution deduplicated", extra={
        "decision_id": data.decision_id, "phase": data.phase.value})
