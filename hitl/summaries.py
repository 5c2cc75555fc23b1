"""Human-readable one-liners and details for a decision (UI list, queue rows)."""

from __future__ import annotations

from hitl.request import DecisionRequest


def summary_for(request: DecisionRequest) -> str:
    """The one line an operator reads in the Temporal UI's workflow list."""
    who = f" for {request.context.requested_by}" if request.context.requested_by else ""
    amount = f" · amount {request.context.amount:g}" if request.context.amount else ""
    return (f"{request.task_type}: {request.action.type}{who} · "
            f"confidence {request.confidence:.2f}{amount}")


def details_for(request: DecisionRequest) -> str:
    """Markdown shown as the workflow's static details: the request context."""
    context = request.context.model_dump(mode="json")
    rows = "\n".join(f"| {key} | {value} |" for key, value in context.items())
    return (f"### {request.task_type} — `{request.action.type}`\n\n"
            f"reversible: **{request.action.reversible}** · confidence: "
            f"**{request.confidence:.3f}**\n\n| context | value |\n|---|---|\n{rows}\n")
