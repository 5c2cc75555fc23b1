"""What an approval is about: one output and one action, and the digest that names them.

An approval counts only for the exact content it names. The digest covers
everything that would reach the action target (the output, the action's type,
params, reversibility and target URL), so an edit of any of them is new
content that needs approvals of its own. Pure: the workflow computes it too.
"""

from __future__ import annotations

import difflib
import hashlib
import json

from pydantic import BaseModel, Field

from hitl.enums import LayerStatus, RiskLevel
from hitl.request import Action

CONTENT_VERSION = "hitl-content/v1"


def content_sha256(output: str, action: Action) -> str:
    """SHA-256 (hex) of the canonical JSON of ``output`` and ``action``."""
    body = {"v": CONTENT_VERSION, "output": output, "action": action.model_dump(mode="json")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Content(BaseModel):
    """Content up for approval: the model's proposal, or a reviewer's edit of it."""

    output: str
    action: Action
    sha256: str
    edited_by: str | None = None  # None: the model's proposal for this attempt
    edited_from_sha256: str | None = None
    risk: RiskLevel | None = None  # this content's risk (an edit is screened again)
    rule_failures: list[str] = Field(default_factory=list)
    judge: LayerStatus | None = None

    @classmethod
    def of(cls, output: str, action: Action, **fields: object) -> Content:
        return cls.model_validate({"output": output, "action": action,
                                   "sha256": content_sha256(output, action), **fields})


def diff(proposal: Content, content: Content) -> list[str]:
    """A unified diff of ``content`` against the model's ``proposal``: the output, then
    the action as indented JSON. Empty when they are the same content."""
    if proposal.sha256 == content.sha256:
        return []

    def action_lines(item: Content) -> list[str]:
        return json.dumps(item.action.model_dump(mode="json"), indent=2,
                          sort_keys=True).splitlines()

    return [*difflib.unified_diff(proposal.output.splitlines(), content.output.splitlines(),
                                  "proposed output", "edited output", lineterm=""),
            *difflib.unified_diff(action_lines(proposal), action_lines(content),
                                  "proposed action", "edited action", lineterm="")]
