"""Requests for tests, built from one realistic base."""

from __future__ import annotations

import uuid
from typing import Any

from hitl.request import DecisionRequest


def make_request(**overrides: Any) -> DecisionRequest:
    data: dict[str, Any] = {
        "decision_id": f"d-{uuid.uuid4().hex[:16]}",
        "task_type": "ticket_classification",
        "action": {"type": "set_label", "params": {"label": "billing"}, "reversible": True},
        "output": "billing",
        "confidence": 0.95,
        "candidates": [{"outcome": "billing", "score": 0.95},
                       {"outcome": "technical", "score": 0.04}],
        "context": {"amount": 0, "is_new_user": False, "affects_multiple_users": False,
                    "requested_by": "svc-helpdesk", "ticket": "I was charged twice"},
    }
    for key, value in overrides.items():
        if key in ("action", "context") and isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return DecisionRequest.model_validate(data)
