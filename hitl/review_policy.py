"""What a decision shows while it waits: the blind view and the Temporal UI's details.

Pure, so it is tested alone. Which reviewer actions count is ``hitl.approvals``.
"""

from __future__ import annotations

from hitl.state import DecisionState


def blind_view(state: DecisionState, *, decided: bool) -> DecisionState:
    """``state`` as anyone but the workflow may see it.

    While a blind double review collects its verdicts, the reviews of the output
    under review (accepted or refused, with reasons and answers) and the approvals
    so far are withheld, so a second reviewer cannot anchor on the first; only
    their count shows. Everything is shown once the verdicts are all in.
    """
    if not state.blind_review or decided or not state.status.is_open:
        return state
    hidden = [r for r in state.reviews if r.attempt == state.attempt]
    if not hidden and not state.approved_by:
        return state
    return state.model_copy(update={
        "reviews": [r for r in state.reviews if r.attempt != state.attempt],
        "approved_by": [], "hidden_reviews": len(hidden)})


def render_details(step: str, state: DecisionState) -> str:
    """Markdown for the Temporal UI's current details: where the decision is and why."""
    lines = [f"**{step}**", "",
             f"- status: `{state.status.value}`",
             f"- zone: `{state.zone.value if state.zone else '-'}` · "
             f"risk: `{state.risk.value if state.risk else '-'}` · "
             f"confidence: {state.confidence:.3f}"]
    if state.policy_version:
        lines.append(f"- policy: `{state.policy_version}`")
    if state.rules is not None:
        failures = ", ".join(f.rule for f in state.rules.failures) or "all passed"
        lines.append(f"- rules: {failures}")
    if state.judge is not None:
        lines.append(f"- judge: {state.judge.status.value}")
    if state.approvals_required > 1:
        lines.append(f"- approvals: {len(state.approved_by)} of {state.approvals_required}")
    if state.sla_deadline is not None:
        lines.append(f"- SLA deadline: {state.sla_deadline.isoformat()}"
                     + (" (overdue)" if state.overdue else ""))
    if state.hidden_reviews:  # ``state`` is the blind view: say that verdicts are in, not which
        lines.append(f"- blind double review: {state.hidden_reviews} verdict(s) in, "
                     "withheld until all are")
    content = state.up_for_approval
    if content is not None and state.status.is_open:
        lines.append(f"- up for approval: `sha256:{content.sha256[:16]}` · "
                     + (f"edit by {content.edited_by}" if content.edited_by
                        else "the model's proposal"))
    if state.refused:
        lines.append(f"- refused actions: {state.refused}")
    if state.reviews:
        last = state.reviews[-1]
        lines.append(f"- last review: {last.verdict.value} by {last.reviewer}"
                     + ("" if last.accepted else f" (refused: {last.refusal})"))
    return "\n".join(lines)
