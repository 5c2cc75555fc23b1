"""DecisionWorkflow: one AI decision, from screening to an action run at most once.

The cascade runs rules (local activity), the LLM judge (activity), then routes
by confidence and risk. AUTO and AUTO_AUDIT execute at once; QUEUE and
ESCALATE wait at the pre-action gate for a reviewer's approve or reject. When
the SLA passes, a reversible output is delivered provisionally and the review
goes on; an irreversible action is only marked overdue and, at the hard
deadline, expires without running. Every failure in the cascade routes to a
person; nothing here can make a decision autonomous by failing.

Reject and regenerate: when the request names a regeneration endpoint, a
person's rejection sends the feedback there and the new output goes through
the whole cascade again (a new attempt, with its own SLA), at most
``regenerate.max_attempts`` times. A regeneration that fails ends rejected.

Blind double review: a policy-set share of escalations needs independent
verdicts from two distinct reviewers, neither shown the other's until both
are in; a rejection does not end it early, and any rejection rejects.

Reviews: which reviewer actions count is decided by the pure state machine in
``hitl.approvals`` (content binding, four-eyes, edits screened again, bounded
refusals); this class waits, asks the registry (``authorize_review``, which
verifies each action's proof) and runs what it decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from hitl import approvals, metrics
    from hitl import search_attributes as sa
    from hitl.approvals import Ballot, ReviewBook
    from hitl.cascade import Assessment, JudgeResult, Routing, RuleFinding, RulesResult, SlaPolicy
    from hitl.content import Content
    from hitl.durations import format_duration
    from hitl.enums import (
        DecisionStatus,
        ExecutionPhase,
        LayerStatus,
        RefusalCode,
        RiskLevel,
        Verdict,
        Zone,
    )
    from hitl.errors import REVIEW_REFUSED_TYPE
    from hitl.payloads import (
        AuthorizeInput,
        AuthorizeResult,
        ExecuteInput,
        ExecutionResult,
        JudgeInput,
        RecordAuditInput,
        RecordDecisionInput,
        RecordResult,
        RecordReviewInput,
        RegenerateInput,
        RegenerateResult,
        queue_entry,
    )
    from hitl.policy import route
    from hitl.request import STORED, Action, DecisionRequest, over_limits
    from hitl.review import ApproveInput, RejectInput, ReviewAck, ReviewRecord
    from hitl.review_policy import blind_view, render_details
    from hitl.state import Attempt, DecisionState, Delivery, compacted
    from hitl.summaries import summary_for
    from workflows import options

PRIORITY_URGENT, PRIORITY_NORMAL, PRIORITY_OVERDUE = 1, 3, 0
ReviewT = TypeVar("ReviewT", ApproveInput, RejectInput)

# Each change to the command sequence since the first release was guarded by its own
# ``workflow.patched`` ID. A patch costs every new decision a marker and a
# TemporalChangeVersion upsert (a visibility write), and all three of these fired after
# the approve signal, inside the wait a reviewer's approval releases. FOLDED, taken at a
# decision's first workflow task, stands for all of them: a decision started since carries
# that one marker; one started before it has no FOLDED marker in its history, so it asks
# its own patches, as it did when it ran.
FOLDED_PATCHES = ("record-decision-local", "reviews-in-arrival-order", "review-with-execution")
FOLDED = "folded-2026-11"
# Reviews bound to content and proven (hitl.approvals). A decision started since
# carries FOLDED_BOUND (taken at its first task, it stands for FOLDED and BOUND, so new
# decisions still write one marker); one already running asks BOUND when its next
# review arrives, so decisions waiting when workers upgrade take the new rules for
# every review from then on. A decision reviewed before the change keeps the old rules
# (its recorded reviews replay as they ran; the registry still verifies proofs for it,
# since that is an activity's answer).
BOUND = "bound-reviews-2026-12"
FOLDED_BOUND = "folded-2026-12"


def _patched(patch_id: str) -> bool:
    """Whether this run takes the path ``patch_id`` introduced (one of FOLDED_PATCHES,
    or BOUND). The SDK memoises each answer, so asking FOLDED_BOUND or FOLDED again
    writes nothing; ``patch_id`` is asked only by decisions started before them."""
    return workflow.patched(FOLDED_BOUND) or workflow.patched(FOLDED) or workflow.patched(
        patch_id)


@workflow.defn(name="DecisionWorkflow")
class DecisionWorkflow:
    @workflow.init
    def __init__(self, request: DecisionRequest) -> None:
        self._request = request
        self._state = DecisionState(
            decision_id=request.decision_id,
            task_type=request.task_type,
            confidence=request.confidence,
            reversible=request.action.reversible,
            submitted_at=workflow.now(),
        )
        self._book = ReviewBook(requester=request.context.requested_by)
        self._bound: bool | None = None  # BOUND, once the first review asked for it
        self._in_flight: set[str] = set()  # request IDs being applied (bound reviews)
        self._proposal_required = 1  # approvals the model's proposal needs
        self._seen: set[str] = set()  # request IDs (reviews before BOUND)
        self._acks: dict[str, ReviewAck] = {}  # their answers
        self._queue_version = 0
        self._writes: list[workflow.ActivityHandle[RecordResult]] = []
        self._unwritten: list[RecordReviewInput] = []  # deciding reviews the executor writes
        self._regenerating = False  # between a rejection and the new output's routing
        self._tickets = 0  # reviews received so far
        self._turn = 0  # the next review, in arrival order, that may be applied

    @property
    def _verdict(self) -> ReviewRecord | None:
        return self._book.verdict

    @_verdict.setter
    def _verdict(self, record: ReviewRecord | None) -> None:
        self._book.verdict = record

    def _is_bound(self) -> bool:
        if self._bound is None:
            self._bound = workflow.patched(FOLDED_BOUND) or workflow.patched(BOUND)
        return self._bound

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, request: DecisionRequest) -> DecisionState:
        # First, so the marker is in the first workflow task (FOLDED where FOLDED_BOUND is
        # left inactive during a rolling upgrade, HITL_INACTIVE_PATCHES).
        _ = workflow.patched(FOLDED_BOUND) or workflow.patched(FOLDED)
        state = self._state
        await self._screen_and_decide()
        while self._regeneration_due() and await self._regenerate():
            await self._screen_and_decide()

        state.finished_at = workflow.now()
        compacted(state)
        self._count(metrics.DECISIONS, outcome=state.status.value, task_type=state.task_type)
        self._details("finished")
        self._upsert()
        await self._drain_writes()
        self._queue_version += 1
        record = RecordDecisionInput(request=self._request, state=state,
                                     queue_version=self._queue_version)
        if _patched("record-decision-local"):
            # An idempotent upsert, so a local activity's at-least-once retry is safe; its
            # result is a marker in this workflow task instead of a scheduled activity and
            # one more workflow task (measured: unloaded latency 150 -> 100 ms, at parity
            # with a bare workflow; docs/BENCHMARKS.md).
            await workflow.execute_local_activity(
                "record_decision", record, result_type=RecordResult,
                start_to_close_timeout=options.STORE_TIMEOUT,
                schedule_to_close_timeout=options.STORE_SCHEDULE_TO_CLOSE,
                retry_policy=options.STORE_RETRY,
            )
        else:  # decisions that reached this point before the change replay as they ran
            await workflow.execute_activity(
                "record_decision", record,
                result_type=RecordResult, start_to_close_timeout=options.STORE_TIMEOUT,
                schedule_to_close_timeout=options.STORE_SCHEDULE_TO_CLOSE,
                retry_policy=options.STORE_RETRY,
            )
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._drain_writes()  # reviews that arrived after the final record
        return state

    async def _screen_and_decide(self) -> None:
        """One attempt: the cascade on the output now in ``self._request``, then the
        gate or autonomous execution."""
        state, request = self._state, self._request
        self._details("screening: rules")
        rules = await self._check_rules(request)
        state.rules, state.risk = rules, rules.assessment.risk
        state.policy_version = rules.assessment.policy_version
        judge = await self._judge(request, rules)
        state.judge = judge
        if judge.status in (LayerStatus.ERROR, LayerStatus.FAILED):
            self._count(metrics.JUDGE_FAILURES, judge=judge.status.value)
        routing = route(
            confidence=request.confidence,
            reversible=request.action.reversible,
            assessment=rules.assessment,
            rule_failures=[f.rule for f in rules.failures],
            judge=judge,
        )
        state.routing, state.zone = routing, routing.zone
        self._regenerating = False  # reviews from here on judge this attempt's output
        self._upsert()

        state.approvals_required = rules.assessment.approvals_required
        if routing.zone.needs_review:
            await self._gate(rules.assessment, routing)
        else:
            await self._execute_autonomously(rules.assessment, routing.zone)
        self._close_attempt()

    # -------------------------------------------------------------- cascade

    async def _check_rules(self, request: DecisionRequest) -> RulesResult:
        try:
            result: RulesResult = await workflow.execute_local_activity(
                "check_rules", request, result_type=RulesResult,
                start_to_close_timeout=options.RULES_TIMEOUT, retry_policy=options.RULES_RETRY,
            )
            return result
        except (ActivityError, ApplicationError) as exc:
            workflow.logger.warning("rules layer failed; failing safe to a person",
                                    extra={"decision_id": request.decision_id})
            return RulesResult(
                assessment=Assessment(
                    policy_version="failsafe", risk=RiskLevel.CRITICAL,
                    risk_reasons=["rules layer failed: treated as critical"], threshold=1.0,
                    threshold_source="failsafe",
                    sla=SlaPolicy(queue_seconds=options.FAILSAFE_ESCALATE_SECONDS,
                                  escalate_seconds=options.FAILSAFE_ESCALATE_SECONDS,
                                  hard_deadline_seconds=options.FAILSAFE_HARD_DEADLINE_SECONDS),
                    audit_sample_rate=1.0,
                ),
                findings=[RuleFinding(rule="rules_layer", passed=False, detail=_cause(exc))],
            )

    async def _judge(self, request: DecisionRequest, rules: RulesResult) -> JudgeResult:
        if not rules.assessment.judge_configured:
            return JudgeResult(status=LayerStatus.SKIPPED, reasons=["no judge configured"])
        if not rules.passed:
            return JudgeResult(status=LayerStatus.SKIPPED, reasons=["rules failed first"])
        self._details("screening: LLM judge")
        judge_input = JudgeInput(
            decision_id=request.decision_id, task_type=request.task_type,
            action_type=request.action.type, action_params=request.action.params,
            output=request.output, confidence=request.confidence,
            context=request.context.model_dump(mode="json"),
        )
        try:
            result: JudgeResult = await workflow.execute_activity(
                "judge_decision", judge_input, result_type=JudgeResult,
                start_to_close_timeout=options.JUDGE_TIMEOUT, retry_policy=options.JUDGE_RETRY,
            )
            return result
        except (ActivityError, ApplicationError) as exc:
            return JudgeResult(status=LayerStatus.ERROR, reasons=[_cause(exc)])

    # ----------------------------------------------------------- autonomous

    async def _execute_autonomously(self, assessment: Assessment, zone: Zone) -> None:
        state = self._state
        self._details(f"{zone.value}: executing")
        if not await self._deliver(ExecutionPhase.EXECUTE, self._request.action,
                                   self._request.output):
            return
        state.status = DecisionStatus.EXECUTED
        state.final_output = self._request.output
        if zone is Zone.AUTO_AUDIT:
            state.audit_sampled = workflow.random().random() < assessment.audit_sample_rate
            await workflow.execute_activity(
                "record_audit",
                RecordAuditInput(
                    decision_id=state.decision_id, task_type=state.task_type,
                    risk=assessment.risk, confidence=state.confidence,
                    sampled=state.audit_sampled, sample_rate=assessment.audit_sample_rate,
                ),
                result_type=RecordResult, start_to_close_timeout=options.STORE_TIMEOUT,
                schedule_to_close_timeout=options.STORE_SCHEDULE_TO_CLOSE,
                retry_policy=options.STORE_RETRY,
            )

    # ---------------------------------------------------------- regenerate

    def _regeneration_due(self) -> bool:
        """Regenerate only after a person's rejection (not an expiry, a refused
        execution or a cascade failure: those have no verdict to learn from)."""
        state, regenerate, verdict = self._state, self._request.regenerate, self._verdict
        if (regenerate is None or state.status is not DecisionStatus.REJECTED
                or verdict is None or verdict.verdict is not Verdict.REJECT):
            return False
        if state.attempt >= regenerate.max_attempts:
            state.outcome = f"rejected after {state.attempt} regenerations"
            return False
        return True

    async def _regenerate(self) -> bool:
        """Ask the service for a new output; False (ending rejected) if it fails."""
        state, verdict, regenerate = self._state, self._verdict, self._request.regenerate
        assert verdict is not None and regenerate is not None
        number = state.attempt + 1
        self._regenerating = True
        state.status = DecisionStatus.SCREENING
        self._details(f"rejected by {verdict.reviewer}: regenerating "
                      f"({number} of {regenerate.max_attempts})")
        await self._publish()  # out of the review queue while the service regenerates
        request = self._request
        try:
            result: RegenerateResult = await workflow.execute_activity(
                "regenerate_output",
                RegenerateInput(
                    decision_id=state.decision_id, attempt=number, url=regenerate.url,
                    task_type=request.task_type, action=request.action,
                    rejected_output=request.output, confidence=request.confidence,
                    reason=verdict.reason, error_category=verdict.error_category,
                    correct_answer=verdict.correct_answer),
                result_type=RegenerateResult, start_to_close_timeout=options.REGENERATE_TIMEOUT,
                retry_policy=options.REGENERATE_RETRY, summary=f"regenerate ({number})",
            )
        except (ActivityError, ApplicationError) as exc:
            self._regenerating = False  # it ends here: late reviews hear "already decided"
            state.status = DecisionStatus.REJECTED
            state.outcome = f"rejected: regeneration {number} failed: {_cause(exc)}"
            workflow.logger.warning("regeneration failed; decision ends rejected",
                                    extra={"decision_id": state.decision_id})
            return False
        self._request = request.model_copy(update={
            "output": result.output, "confidence": result.confidence,
            "candidates": result.candidates, "outcome": result.outcome})
        # A fresh attempt: everything the gate and the reviews decided is per output.
        self._book.reset()
        state.proposal = state.edit = None  # the gate puts the new output up, if it gates
        state.attempt, state.confidence = number, result.confidence
        state.zone = state.risk = state.rules = state.judge = state.routing = None
        state.approved_by, state.approvals_required = [], 1
        state.escalated_at = state.sla_deadline = state.hard_deadline = None
        state.overdue, state.blind_review, state.flagged_for_monitoring = False, False, False
        state.priority = PRIORITY_NORMAL
        return True

    def _close_attempt(self) -> None:
        """Keep what became of this attempt's output in the decision's trail."""
        self._write_reviews()  # any deciding review no delivery took (a refused execution)
        state, verdict = self._state, self._verdict
        reviews = [r for r in state.reviews if r.accepted and r.attempt == state.attempt]
        if verdict is not None and verdict.request_id not in {r.request_id for r in reviews}:
            reviews.append(verdict)  # a blind review's disagreement, decided by the workflow
        state.attempts.append(Attempt(
            number=state.attempt, output=self._request.output, confidence=state.confidence,
            zone=state.zone, risk=state.risk, judge=state.judge.status if state.judge else None,
            rule_failures=[f.rule for f in state.rules.failures] if state.rules else [],
            blind_review=state.blind_review, status=state.status,
            verdicts=[_verdict_line(r) for r in reviews]))

    def _regenerating_refusal(self) -> str:
        return (f"decision {self._state.decision_id} is being regenerated after a rejection; "
                "review the new output once it is waiting")

    # ----------------------------------------------------------------- gate

    async def _gate(self, assessment: Assessment, routing: Routing) -> None:
        state, sla, request = self._state, assessment.sla, self._request
        # What reviews must name. Set before any held review proceeds (no await in
        # between), and only here: an autonomous decision has nothing up for approval.
        self._book.new_attempt(state, Content.of(
            request.output, request.action, risk=state.risk,
            judge=state.judge.status if state.judge else None,
            rule_failures=[f.rule for f in state.rules.failures] if state.rules else []))
        # Decided before any held review proceeds (no await in between). No draw at
        # rate 0, so decisions screened before blind review replay as they ran.
        rate = assessment.double_blind_rate
        state.blind_review = rate >= 1.0 or (rate > 0.0 and workflow.random().random() < rate)
        if state.blind_review:
            state.approvals_required = max(2, state.approvals_required)
        self._proposal_required = state.approvals_required
        now = workflow.now()
        sla_seconds = routing.sla_seconds if routing.sla_seconds is not None else sla.queue_seconds
        state.status = DecisionStatus.PENDING_REVIEW
        state.escalated_at = now
        state.sla_deadline = now + timedelta(seconds=sla_seconds)
        state.hard_deadline = now + timedelta(seconds=sla.hard_deadline_seconds)
        state.priority = PRIORITY_URGENT if routing.zone is Zone.ESCALATE else PRIORITY_NORMAL
        self._count(metrics.ESCALATIONS)
        self._details("waiting for review")
        await self._publish()

        decided = await self._wait_for_verdict(sla_seconds, f"SLA {format_duration(sla_seconds)}")
        if not decided:
            if sla_seconds > 0:
                self._count(metrics.SLA_BREACHES, reversible=str(state.reversible).lower())
            if state.reversible and self._blind_rejection() is None:
                self._count(metrics.PROVISIONAL)
                self._details("SLA passed: delivered provisionally, review goes on")
                if not await self._deliver(ExecutionPhase.PROVISIONAL, self._request.action,
                                           self._request.output, may_be_revised=True):
                    return
                state.status = DecisionStatus.PROVISIONAL
                state.final_output = self._request.output
            else:
                state.overdue = True
                state.priority = PRIORITY_OVERDUE
                self._details("SLA passed: overdue, irreversible action still waits")
            await self._publish()
            remaining = (state.hard_deadline - workflow.now()).total_seconds()
            decided = await self._wait_for_verdict(
                max(remaining, 0.0), f"hard deadline {format_duration(sla.hard_deadline_seconds)}")
        if not decided:
            rejection = self._blind_rejection()
            if rejection is None:
                if state.status is not DecisionStatus.PROVISIONAL:
                    state.status = DecisionStatus.EXPIRED
                # A provisional delivery stands, unreviewed; the status says so.
                return
            # A blind reviewer rejected and the second verdict never came: fail closed.
            self._verdict = rejection
        await self._apply_verdict()

    def _blind_rejection(self) -> ReviewRecord | None:
        """The first accepted rejection of a blind review still waiting for verdicts."""
        return approvals.blind_rejection(self._state, self._book)

    async def _wait_for_verdict(self, seconds: float, summary: str) -> bool:
        if self._verdict is not None:
            return True
        if seconds <= 0:
            return False
        try:
            await workflow.wait_condition(lambda: self._verdict is not None,
                                          timeout=timedelta(seconds=seconds),
                                          timeout_summary=summary)
        except TimeoutError:
            return False
        return True

    async def _apply_verdict(self) -> None:
        state, verdict = self._state, self._verdict
        assert verdict is not None
        provisional = state.status is DecisionStatus.PROVISIONAL
        if verdict.verdict is Verdict.APPROVE:
            approved, edit = self._book.approved, self._book.legacy_edit
            if approved is not None:  # bound: exactly the content its approvers named
                action, output = approved.action, approved.output
                revised = state.proposal is None or approved.sha256 != state.proposal.sha256
            else:
                action = edit.action if edit and edit.action else self._request.action
                output = edit.output if edit and edit.output is not None else self._request.output
                revised = verdict.edited
            state.flagged_for_monitoring = verdict.flag_for_monitoring
            if provisional and not revised:
                phase, status = ExecutionPhase.CONFIRM, DecisionStatus.EXECUTED
            elif provisional:
                phase, status = ExecutionPhase.REVISION, DecisionStatus.REVISED
            else:
                phase, status = ExecutionPhase.EXECUTE, DecisionStatus.EXECUTED
            self._details(f"approved by {verdict.reviewer}: executing")
            if await self._deliver(phase, action, output):
                state.status, state.final_output = status, output
        elif provisional:
            # Bound: a rejection retracts the provisional delivery (a revision with no
            # output). Its correct answer is feedback, never delivered: one reviewer, or the
            # requester, must not put text no one approved in front of users. A correction
            # is an edit, screened and approved like any content.
            revision = verdict.correct_answer if self._bound is False else None
            self._details(f"rejected by {verdict.reviewer}: "
                          + ("delivering revision" if revision is not None else "retracting"))
            if await self._deliver(ExecutionPhase.REVISION, self._request.action, revision):
                state.status, state.final_output = DecisionStatus.REVISED, revision
        else:
            state.status = DecisionStatus.REJECTED

    async def _deliver(self, phase: ExecutionPhase, action: Action, output: str | None,
                       *, may_be_revised: bool = False) -> bool:
        """Run the executor; False (and status ``failed``) if the target refused."""
        state = self._state
        reviews, self._unwritten = self._unwritten, []
        try:
            result: ExecutionResult = await workflow.execute_activity(
                "execute_action",
                ExecuteInput(decision_id=state.decision_id, phase=phase, action=action,
                             output=output, may_be_revised=may_be_revised, reviews=reviews),
                result_type=ExecutionResult, start_to_close_timeout=options.EXECUTE_TIMEOUT,
                schedule_to_close_timeout=options.EXECUTE_SCHEDULE_TO_CLOSE,
                retry_policy=options.EXECUTE_RETRY, summary=_phase_summary(phase),
            )
        except (ActivityError, ApplicationError) as exc:
            self._unwritten = reviews + self._unwritten  # written by _close_attempt instead
            state.status, state.failure = DecisionStatus.FAILED, _cause(exc)
            workflow.logger.error("execution failed", extra={
                "decision_id": state.decision_id, "phase": phase.value})
            return False
        state.deliveries.append(Delivery(
            phase=phase, output=output, at=result.executed_at, executor=result.executor,
            deduplicated=result.deduplicated, may_be_revised=may_be_revised,
        ))
        return True

    # ------------------------------------------------------------- reviews

    # Signals take raw payloads and validate here: a null, a missing or an extra
    # argument (easy to send from the temporal CLI) must be dropped, not fail the
    # workflow task on every retry and wedge the decision.
    @workflow.signal(name="approve")
    async def approve(self, *args: Any) -> None:
        data = _signal_payload("approve", args, ApproveInput)
        if data is not None:
            await self._review(Verdict.APPROVE, data)

    @workflow.signal(name="reject")
    async def reject(self, *args: Any) -> None:
        data = _signal_payload("reject", args, RejectInput)
        if data is not None:
            await self._review(Verdict.REJECT, data)

    @workflow.update(name="approve")
    async def approve_update(self, data: ApproveInput) -> ReviewAck:
        return await self._review_or_raise(Verdict.APPROVE, data)

    @approve_update.validator
    def _validate_approve(self, data: ApproveInput) -> None:
        self._validate(data)

    @workflow.update(name="reject")
    async def reject_update(self, data: RejectInput) -> ReviewAck:
        return await self._review_or_raise(Verdict.REJECT, data)

    @reject_update.validator
    def _validate_reject(self, data: RejectInput) -> None:
        self._validate(data)

    @workflow.query(name="state")
    def query_state(self) -> DecisionState:
        """The state as reviewers may see it: a pending blind review's verdicts withheld."""
        return blind_view(self._state, decided=self._verdict is not None)

    def _validate(self, data: ApproveInput | RejectInput) -> None:
        """Reject, before it reaches history, an action that cannot count: on a decided
        decision, during a regeneration, or (once reviews are bound) about content that
        is no longer up for approval."""
        if not isinstance(data, ApproveInput | RejectInput):  # e.g. a binary/plain null
            raise _refused(None, "the update takes one reviewer action object")
        if data.request_id is not None and (
                data.request_id in self._seen or data.request_id in self._book.acks
                or data.request_id in self._in_flight):
            return  # a retry of an action already taken: answered idempotently
        if self._regenerating:
            raise _refused(RefusalCode.NOT_WAITING, self._regenerating_refusal())
        if self._verdict is not None or not self._state.status.is_open:
            raise _refused(RefusalCode.DECIDED,
                           f"decision {self._state.decision_id} is already decided "
                           f"(status {self._state.status.value})")
        content = self._state.up_for_approval
        if self._bound and content is not None and data.content_sha256 != content.sha256:
            raise _refused(RefusalCode.CONTENT_CHANGED, approvals.refusal_text_changed(
                content, data.content_sha256))
        if self._bound and (problem := over_limits(data)) is not None:
            raise _refused(RefusalCode.FORBIDDEN, problem)

    async def _review_or_raise(self, verdict: Verdict,
                               data: ApproveInput | RejectInput) -> ReviewAck:
        ack = await self._review(verdict, data)
        if not ack.accepted:
            raise _refused(ack.code, ack.message)
        return ack

    async def _review(self, verdict: Verdict, data: ApproveInput | RejectInput) -> ReviewAck:
        if not self._is_bound():
            return await self._legacy_review(verdict, data)
        request_id = data.request_id or str(workflow.uuid4())
        # A duplicate delivery gets the first one's answer; one that arrives while the
        # first is being applied waits for it. Only proven actions are remembered, so a
        # forged action cannot take a reviewer's request ID first. Checked and claimed
        # with no await in between: two deliveries in one activation must not both pass.
        while (known := self._book.answered(request_id, data.reviewer)) is None:
            if request_id not in self._in_flight:
                break
            await workflow.wait_condition(lambda: request_id not in self._in_flight)
        if known is not None:
            return known
        self._in_flight.add(request_id)
        ticket, self._tickets = self._tickets, self._tickets + 1
        try:
            return await self._review_in_turn(Ballot(verdict=verdict, data=data,
                                                     request_id=request_id,
                                                     received_at=workflow.now()), ticket)
        finally:
            self._in_flight.discard(request_id)
            self._turn = max(self._turn, ticket + 1)

    async def _review_in_turn(self, ballot: Ballot, ticket: int) -> ReviewAck:
        state, book = self._state, self._book
        # A review arriving while a rejected output is regenerated judged an older
        # output: never let it decide the new one.
        stale, judged = self._regenerating, state.attempt
        if not stale:
            # Held until routing: the zone and risk decide whether and by whom it may be taken.
            await workflow.wait_condition(lambda: state.routing is not None)
        authorization = None if stale else await self._authorize_ballot(ballot)
        # Authorizations run side by side and finish in any order; reviews are applied in
        # the order they arrived.
        await workflow.wait_condition(lambda: self._turn >= ticket)
        stale = stale or self._regenerating or state.attempt != judged
        if not stale and approvals.needs_reauthorization(state, authorization):
            authorization = await self._authorize_ballot(ballot)  # an edit raised the risk
        refused = approvals.refusal(state, book, ballot, authorization, stale=stale)
        edited, required = None, state.approvals_required
        if refused is None and authorization is not None and not state.blind_review:
            edited = approvals.edited_content(state, ballot, authorization.reviewer or "")
            if edited is not None:
                edited, required, refused = await self._screen_edit(ballot, edited)
        record = approvals.record_of(state, ballot, authorization, refused, attempt=judged)
        if refused is not None:
            message: str = refused[1]
        elif edited is not None:
            message = approvals.take_edit(state, book, record, edited, required)
        else:
            message = approvals.take(state, book, record, ballot)
        kept = approvals.keep(state, book, record)
        ack = ReviewAck(accepted=refused is None, status=state.status, message=message,
                        code=refused[0] if refused else None)
        if authorization is not None and authorization.proven and authorization.reviewer:
            book.remember(ballot.request_id, authorization.reviewer, ack)
        if refused is None:
            metrics.observe_review_latency(workflow.metric_meter(), record.latency_seconds or 0.0,
                                           {"verdict": record.verdict.value, **self._labels()})
        else:
            self._count(metrics.REVIEW_REFUSALS, verdict=record.verdict.value,
                        code=refused[0].value)
        self._details("review received")
        if kept:  # before any await: a decisive review must reach the executor's write
            self._keep_written(record)
        if edited is not None and refused is None and self._verdict is None:
            await self._publish()  # the queue and search attributes show the edit's risk
        return ack

    async def _screen_edit(self, ballot: Ballot, edited: Content
                           ) -> tuple[Content, int, approvals.Refusal | None]:
        """The cascade's rules and judge on an edited output and action. The edit's risk
        sets the approvals it needs and the role its editor must hold."""
        state, proposal = self._state, self._state.proposal
        assert proposal is not None and proposal.risk is not None
        request = self._request.model_copy(update={"output": edited.output,
                                                   "action": edited.action})
        rules = await self._check_rules(request)
        judge = await self._judge(request, rules)
        content, required = approvals.screened(
            edited, proposal_risk=proposal.risk, proposal_required=self._proposal_required,
            risk=rules.assessment.risk, required=rules.assessment.approvals_required,
            rule_failures=[f.rule for f in rules.failures], judge=judge.status)
        assert content.risk is not None
        if self._verdict is not None or not state.status.is_open:  # the deadline passed
            return content, required, approvals.decided_refusal(state)
        if state.risk is None or content.risk.rank > state.risk.rank:
            again = await self._authorize_ballot(ballot, risk=content.risk)
            if not again.allowed:
                return content, required, (RefusalCode.FORBIDDEN, (
                    f"the edit raises the risk to {content.risk.value}: {again.reason}; "
                    "nothing changed"))
        return content, required, None

    def _review_write(self, record: ReviewRecord) -> RecordReviewInput:
        """The store's row for ``record``, with the decision's facts as they are now."""
        state = self._state
        return RecordReviewInput(decision_id=state.decision_id, task_type=state.task_type,
                                 confidence=state.confidence,
                                 zone=state.zone.value if state.zone else None,
                                 risk=state.risk.value if state.risk else None, review=record)

    def _authorize_input(self, data: ApproveInput | RejectInput,
                         risk: RiskLevel) -> AuthorizeInput:
        return AuthorizeInput(reviewer=data.reviewer, risk=risk,
                              decision_id=self._state.decision_id,
                              approval=data if isinstance(data, ApproveInput) else None,
                              rejection=data if isinstance(data, RejectInput) else None)

    def _keep_written(self, record: ReviewRecord) -> None:
        write = self._review_write(record)
        if self._delivers_next(record):
            # The review that releases a delivery is written by the executor, before the
            # ledger row it authorises. _close_attempt writes it if no delivery takes it.
            self._unwritten.append(write)
        else:
            self._record_review(write)

    async def _authorize_ballot(self, ballot: Ballot,
                                risk: RiskLevel | None = None) -> AuthorizeResult:
        """The registry's answer for ``ballot``: its proof, then the reviewer's role for
        ``risk`` (the decision's, by default). Fails closed if the registry is down."""
        try:
            result: AuthorizeResult = await workflow.execute_local_activity(
                "authorize_review",
                self._authorize_input(ballot.data, risk or self._state.risk or RiskLevel.CRITICAL),
                result_type=AuthorizeResult, start_to_close_timeout=options.STORE_TIMEOUT,
                retry_policy=options.AUTHORIZE_RETRY,
            )
        except (ActivityError, ApplicationError) as exc:
            return AuthorizeResult(allowed=False, code=RefusalCode.UNPROVEN,
                                   reason=f"reviewer registry unavailable, refusing: "
                                          f"{_cause(exc)}")
        return result

    # ------------------------------------------------ reviews before BOUND

    async def _legacy_review(self, verdict: Verdict,
                             data: ApproveInput | RejectInput) -> ReviewAck:
        """Reviews of a decision first reviewed before BOUND, exactly as they ran then."""
        request_id = data.request_id or str(workflow.uuid4())
        if request_id in self._seen:  # duplicate delivery: the first one's answer
            await workflow.wait_condition(lambda: request_id in self._acks)
            return self._acks[request_id]
        self._seen.add(request_id)
        ticket, self._tickets = self._tickets, self._tickets + 1
        try:
            return await self._legacy_review_in_turn(verdict, data, request_id, ticket)
        finally:
            self._turn = max(self._turn, ticket + 1)

    async def _legacy_review_in_turn(self, verdict: Verdict, data: ApproveInput | RejectInput,
                                     request_id: str, ticket: int) -> ReviewAck:
        state = self._state
        received_at = workflow.now()
        stale, judged = self._regenerating, state.attempt
        if not stale:
            await workflow.wait_condition(lambda: state.routing is not None)
        authorization = None if stale else await self._legacy_authorize(verdict, data)
        if _patched("reviews-in-arrival-order"):
            await workflow.wait_condition(lambda: self._turn >= ticket)
        stale = stale or self._regenerating or state.attempt != judged
        refusal = self._regenerating_refusal() if stale else approvals.legacy_refusal(
            state=state, verdict=verdict, reviewer=data.reviewer,
            requester=self._request.context.requested_by, decided=self._verdict is not None,
            authorization=authorization)
        start = (state.escalated_at if state.escalated_at and state.escalated_at <= received_at
                 else state.submitted_at)
        record = ReviewRecord(
            request_id=request_id, reviewer=data.reviewer, verdict=verdict, reason=data.reason,
            received_at=received_at, time_on_page_seconds=data.time_on_page_seconds,
            latency_seconds=(received_at - start).total_seconds(),
            accepted=refusal is None, refusal=refusal, attempt=judged,
            blind=state.blind_review,
        )
        if isinstance(data, ApproveInput):
            record.edited = data.output is not None or data.action is not None
            record.flag_for_monitoring = data.flag_for_monitoring
        else:
            record.correct_answer, record.error_category = data.correct_answer, data.error_category
        state.reviews.append(record)
        message = refusal or approvals.legacy_take(state, self._book, record, data)
        ack = ReviewAck(accepted=refusal is None, status=state.status, message=message)
        self._acks[request_id] = ack
        if refusal is None:
            metrics.observe_review_latency(workflow.metric_meter(), record.latency_seconds or 0.0,
                                           {"verdict": verdict.value, **self._labels()})
        else:
            self._count(metrics.REVIEW_REFUSALS, verdict=verdict.value)
        self._details("review received")
        write = self._review_write(record)
        if self._delivers_next(record) and _patched("review-with-execution"):
            self._unwritten.append(write)
        else:
            self._record_review(write)
        return ack

    async def _legacy_authorize(self, verdict: Verdict,
                                data: ApproveInput | RejectInput) -> str | None:
        """The registry's refusal, or None; the proof is verified as for bound reviews."""
        state = self._state
        if self._verdict is not None or state.risk is None or not (
                state.zone and state.zone.needs_review):
            return None  # refused anyway by legacy_refusal; no lookup needed
        try:
            result: AuthorizeResult = await workflow.execute_local_activity(
                "authorize_review",
                self._authorize_input(data, state.risk),
                result_type=AuthorizeResult, start_to_close_timeout=options.STORE_TIMEOUT,
                retry_policy=options.AUTHORIZE_RETRY, summary=f"authorize {data.reviewer}",
            )
        except (ActivityError, ApplicationError) as exc:
            return f"reviewer registry unavailable, refusing: {_cause(exc)}"
        return None if result.allowed else result.reason

    # ------------------------------------------------------------- writes

    def _delivers_next(self, record: ReviewRecord) -> bool:
        """This accepted review decided the attempt, and the decision executes next."""
        return record.accepted and self._verdict is record and (
            record.verdict is Verdict.APPROVE or self._state.status is DecisionStatus.PROVISIONAL)

    def _write_reviews(self) -> None:
        for write in self._unwritten:
            self._record_review(write)
        self._unwritten = []

    def _record_review(self, write: RecordReviewInput) -> None:
        """Persist a review in the background: a reviewer's update must not wait on (or
        hang with) the store; the run drains these before it ends."""
        self._writes.append(workflow.start_activity(
            "record_review", write,
            result_type=RecordResult, start_to_close_timeout=options.STORE_TIMEOUT,
            schedule_to_close_timeout=options.STORE_SCHEDULE_TO_CLOSE,
            retry_policy=options.STORE_RETRY,
            summary=f"record review ({write.review.verdict.value})",
        ))

    async def _drain_writes(self) -> None:
        """Wait for background store writes; a write that finally fails is logged (the
        review is in this workflow's state and history, and in the final record)."""
        while self._writes:
            pending, self._writes = self._writes, []
            for outcome in await asyncio.gather(*pending, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    workflow.logger.error("review record not written", extra={
                        "decision_id": self._state.decision_id, "error": _cause(outcome)})

    # ------------------------------------------------------------ visibility

    def _upsert(self) -> None:
        state = self._state
        updates: list[SearchAttributeUpdate[Any]] = [
            sa.STATUS.value_set(state.status.value), sa.PRIORITY.value_set(state.priority)]
        if state.zone is not None:
            updates.append(sa.ZONE.value_set(state.zone.value))
        if state.risk is not None:
            updates.append(sa.RISK.value_set(state.risk.value))
        if state.sla_deadline is not None:
            updates.append(sa.SLA_DEADLINE.value_set(state.sla_deadline))
        if state.attempt > 0:  # a regenerated output comes with its own confidence
            updates.append(sa.CONFIDENCE.value_set(state.confidence))
        workflow.upsert_search_attributes(updates)

    async def _publish(self) -> None:
        """Make the gate's state visible: search attributes and the review queue row."""
        self._upsert()
        self._queue_version += 1
        summary, state = summary_for(self._request), self._state
        if state.attempt:
            summary = f"regenerated output {state.attempt} · {summary}"
        if state.blind_review:
            summary = f"blind double review: independent verdict · {summary}"
        await workflow.execute_activity(
            "update_queue",
            queue_entry(state, summary=summary, version=self._queue_version),
            result_type=RecordResult, start_to_close_timeout=options.STORE_TIMEOUT,
            schedule_to_close_timeout=options.STORE_SCHEDULE_TO_CLOSE,
            retry_policy=options.STORE_RETRY,
        )

    def _labels(self) -> dict[str, str]:
        state = self._state
        return {"zone": state.zone.value if state.zone else "none",
                "risk": state.risk.value if state.risk else "none"}

    def _count(self, name: str, **extra: str) -> None:
        metrics.count(workflow.metric_meter(), name, {**self._labels(), **extra})

    def _details(self, step: str) -> None:
        state = blind_view(self._state, decided=self._verdict is not None)
        workflow.set_current_details(render_details(step, state))


def _signal_payload(name: str, args: Sequence[Any],
                    model: type[ReviewT]) -> ReviewT | None:
    """The one review payload of a signal, or None (logged) for anything else.

    Untyped varargs arrive JSON-decoded (a dict for a review object); a raw value
    is decoded the same way. Validation happens here, where a failure can be dropped.
    """
    if len(args) != 1:
        workflow.logger.warning("dropped %s signal with %d arguments (expected 1)",
                                name, len(args))
        return None
    value = args[0]
    try:
        if isinstance(value, RawValue):
            value = workflow.payload_converter().from_payload(value.payload)
        # As stored: the limits of new input are the workflow's to apply (hitl.approvals),
        # so a signal accepted under earlier limits replays as it ran.
        return model.model_validate(value, context=STORED)
    except (ValidationError, ValueError, TypeError) as exc:
        workflow.logger.warning("dropped malformed %s signal: %s", name,
                                str(exc).splitlines()[0][:200])
        return None


def _verdict_line(record: ReviewRecord) -> str:
    """"reject by bob: wrong label", the reason cut short: the review itself keeps it."""
    reason = record.reason if len(record.reason) <= 200 else record.reason[:200] + "…"
    return f"{record.verdict.value} by {record.reviewer}" + (f": {reason}" if reason else "")


def _refused(code: RefusalCode | None, message: str) -> ApplicationError:
    """A refused reviewer action as the update's failure; the code is its one detail."""
    return ApplicationError(message, *([code.value] if code else []),
                            type=REVIEW_REFUSED_TYPE, non_retryable=True)


def _cause(exc: BaseException) -> str:
    """The innermost failure message, for reasons shown to reviewers."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


def _phase_summary(phase: ExecutionPhase) -> str | None:
    """The executor's summary in the Temporal UI, only where it says more than the
    activity's type: a provisional delivery or a revision.

    A summary is a payload of its own on the command, converted, visited and stored in
    history like any other; the store and rules activities carry none for that reason.
    (With the stock sandbox runner each encoded payload also cost four sandbox entries;
    docs/BENCHMARKS.md, "The sandbox, counted".)
    """
    return None if phase is ExecutionPhase.EXECUTE else f"execute ({phase.value})"
