"""RecalibrationWorkflow: the feedback loop, from reviews and audits to an applied policy.

A Temporal Schedule (``hitl.schedules``) starts it, weekly by default. One
activity certifies new thresholds from the labels of the lookback window and
stores the proposed policy version with its diff. No change: done. A change
within the configured bounds is activated at once. Anything else goes through
the apply gate: a child ``DecisionWorkflow`` of task type ``policy_change``
(critical in the built-in policy, so a person, two with four-eyes, must
approve) whose irreversible ``apply_policy`` action means a timeout never
applies it. Executed (approved) activates the version; rejected, expired or
failed rejects it and the active policy stays as it was.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from hitl import search_attributes as sa
    from hitl.client import MEMO_DIGEST
    from hitl.enums import DecisionStatus, Verdict
    from hitl.recalibration import (
        APPLY_POLICY_ACTION,
        POLICY_CHANGE_TASK_TYPE,
        RECALIBRATION_ACTOR,
        PolicyDecisionInput,
        PolicyDecisionResult,
        Proposal,
        ProposeInput,
        RecalibrationInput,
        RecalibrationOutcome,
        RecalibrationResult,
        gate_id,
    )
    from hitl.request import Action, DecisionContext, DecisionRequest
    from hitl.state import DecisionState
    from workflows import options

# Certifying reads the whole lookback window of labels: minutes on a large store.
# Store retries as for every store write (workflows/options.py); the activities raise
# their business failures (a version conflict, a bad config) as non-retryable.
PROPOSE_TIMEOUT = timedelta(minutes=10)


@workflow.defn(name="RecalibrationWorkflow")
class RecalibrationWorkflow:
    @workflow.run
    async def run(self, data: RecalibrationInput) -> RecalibrationResult:
        workflow.set_current_details("certifying thresholds from reviews and audits")
        proposal: Proposal = await workflow.execute_activity(
            "propose_policy",
            ProposeInput(config=data.config, now=workflow.now(),
                         workflow_id=workflow.info().workflow_id),
            result_type=Proposal, start_to_close_timeout=PROPOSE_TIMEOUT,
            schedule_to_close_timeout=options.STORE_SCHEDULE_TO_CLOSE,
            retry_policy=options.STORE_RETRY, summary="certify and propose")
        result = RecalibrationResult(
            outcome=RecalibrationOutcome.NO_CHANGE, base_version=proposal.base_version,
            version=proposal.version, feedback=proposal.diff.feedback,
            violations=proposal.violations)
        if proposal.version is None:
            workflow.set_current_details(f"no change to {proposal.base_version} "
                                         f"({proposal.diff.feedback.labels} labels)")
            return result
        version = proposal.version
        if proposal.within_bounds:
            decided = await self._decide("activate_policy", proposal, RECALIBRATION_ACTOR,
                                         "within the auto-apply bounds")
            result.outcome = _activated(decided)
            workflow.set_current_details(f"{version}: {result.outcome.value} (within bounds)")
            return result

        request = _gate_request(proposal, version)
        result.gate_id = request.decision_id
        workflow.set_current_details(f"{version}: waiting for approval in {request.decision_id}")
        try:
            state: DecisionState = await workflow.execute_child_workflow(
                "DecisionWorkflow", request, id=request.decision_id, result_type=DecisionState,
                memo={MEMO_DIGEST: request.payload_sha256()},
                search_attributes=TypedSearchAttributes([
                    SearchAttributePair(sa.TASK_TYPE, request.task_type),
                    SearchAttributePair(sa.CONFIDENCE, request.confidence),
                    SearchAttributePair(sa.STATUS, DecisionStatus.SCREENING.value)]),
                static_summary=f"policy change: apply {version} "
                               f"({len(proposal.diff.changes)} thresholds)",
                static_details=f"```\n{proposal.text}\n```\n")
        except ChildWorkflowError as exc:
            result.gate_status = "failed"
            await self._decide("reject_policy", proposal, RECALIBRATION_ACTOR,
                               f"apply gate {request.decision_id} failed: {exc.cause or exc}")
            result.outcome = RecalibrationOutcome.REJECTED
            return result
        result.gate_status = state.status.value
        # An approval that edited the output or the action approved something else
        # than this version: only the proposal as computed may be applied.
        edited = any(r.accepted and r.edited for r in state.reviews)
        if state.status is DecisionStatus.EXECUTED and not edited:
            decided = await self._decide("activate_policy", proposal,
                                         ", ".join(state.approved_by) or RECALIBRATION_ACTOR,
                                         f"approved in {request.decision_id}")
            result.outcome = (RecalibrationOutcome.APPROVED if decided.status == "active"
                              else RecalibrationOutcome.SUPERSEDED)
        else:
            rejecter = next((r.reviewer for r in state.reviews
                             if r.accepted and r.verdict is Verdict.REJECT), RECALIBRATION_ACTOR)
            await self._decide("reject_policy", proposal, rejecter,
                               f"apply gate {request.decision_id} ended {state.status.value}"
                               + (" with edits: only the proposal as computed may be applied"
                                  if edited else ""))
            result.outcome = RecalibrationOutcome.REJECTED
        workflow.set_current_details(f"{version}: {result.outcome.value}")
        return result

    async def _decide(self, activity: str, proposal: Proposal, by: str,
                      note: str) -> PolicyDecisionResult:
        assert proposal.version is not None
        decided: PolicyDecisionResult = await workflow.execute_activity(
            activity, PolicyDecisionInput(version=proposal.version,
                                          base_version=proposal.base_version, by=by, note=note),
            result_type=PolicyDecisionResult, start_to_close_timeout=options.STORE_TIMEOUT,
            schedule_to_close_timeout=options.STORE_SCHEDULE_TO_CLOSE,
            retry_policy=options.STORE_RETRY, summary=activity.replace("_", " "))
        return decided


def _activated(decided: PolicyDecisionResult) -> RecalibrationOutcome:
    """Applied, or superseded when another version became active while this one waited."""
    return (RecalibrationOutcome.APPLIED if decided.status == "active"
            else RecalibrationOutcome.SUPERSEDED)


def _gate_request(proposal: Proposal, version: str) -> DecisionRequest:
    """The apply gate as a decision: irreversible, so a timeout never applies it, and
    confidence 0 since no model vouches for it; the reviewer reads the diff as its output."""
    return DecisionRequest(
        decision_id=gate_id(version), task_type=POLICY_CHANGE_TASK_TYPE,
        action=Action(type=APPLY_POLICY_ACTION, params={"version": version}, reversible=False),
        output=proposal.text, confidence=0.0,
        context=DecisionContext.model_validate(proposal.context))
