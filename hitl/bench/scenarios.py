"""The decisions the benchmark submits, and the hot pure functions timed on one core.

An autonomous decision is a confident ticket classification (low risk, AUTO,
ledger executor). A gated one is a price adjustment at confidence 0.5 that
cannot be undone (high risk, ESCALATE): it waits for one approval. The hot
functions run over the demo stream's realistic mix, prompt injections included.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from hitl.cascade import JudgeResult
from hitl.demo import demo_requests
from hitl.enums import LayerStatus
from hitl.policy import Policy, assess, route
from hitl.request import DecisionRequest
from hitl.rules import check_rules

REVIEWER = "bench-reviewer"
TICKETS = ("I was charged twice this month", "The app crashes when I upload a photo",
           "How do I change my email address?")


def auto_request(prefix: str, index: int) -> DecisionRequest:
    return DecisionRequest.model_validate({
        "decision_id": f"{prefix}-{index:06d}", "task_type": "ticket_classification",
        "output": "billing", "outcome": "billing", "confidence": 0.95,
        "action": {"type": "set_label", "params": {"label": "billing"}, "reversible": True},
        "candidates": [{"outcome": "billing", "score": 0.95},
                       {"outcome": "technical", "score": 0.04}],
        "context": {"ticket": TICKETS[index % len(TICKETS)], "requested_by": "svc-helpdesk"},
    })


def gate_request(prefix: str, index: int) -> DecisionRequest:
    return DecisionRequest.model_validate({
        "decision_id": f"{prefix}-{index:06d}", "task_type": "price_adjustment",
        "output": "Lower the price of SKU-4410 to 17.99", "confidence": 0.5,
        "action": {"type": "adjust_price",
                   "params": {"sku": f"SKU-{4000 + index % 997}", "new_price": 17.99},
                   "reversible": False},
        "context": {"requested_by": "svc-pricing", "competitor_price": 18.49},
    })


def _rate(run_once: Callable[[], int], min_seconds: float, repeats: int) -> dict[str, float]:
    """Calls per second of ``run_once`` (which returns how many it did), best and
    median of ``repeats`` runs of at least ``min_seconds`` each. The best is the
    headline, as with ``timeit``: other load on the machine only ever slows a run."""
    rates = []
    for _ in range(repeats):
        done, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < min_seconds:
            done += run_once()
        rates.append(done / elapsed)
    return {"per_second": round(max(rates)), "median_per_second": round(statistics.median(rates))}


def hot_functions(policy: Policy, *, min_seconds: float, repeats: int = 3,
                  requests: Sequence[DecisionRequest] | None = None) -> dict[str, Any]:
    """Decisions per second through ``check_rules`` and ``assess`` + ``route``."""
    batch = list(requests or demo_requests(400, seed=11, prefix="hot"))
    skipped = JudgeResult(status=LayerStatus.SKIPPED, reasons=["no judge configured"])
    failures = [[f.rule for f in check_rules(r, policy) if not f.passed] for r in batch]

    def rules_pass() -> int:
        for request in batch:
            check_rules(request, policy)
        return len(batch)

    def assess_route_pass() -> int:
        for request, failed in zip(batch, failures, strict=True):
            assessment = assess(request, policy, judge_configured=False)
            route(confidence=request.confidence, reversible=request.action.reversible,
                  assessment=assessment, rule_failures=failed, judge=skipped)
        return len(batch)

    return {
        "requests": len(batch),
        "task_types": sorted({r.task_type for r in batch}),
        "check_rules": _rate(rules_pass, min_seconds, repeats),
        "assess_route": _rate(assess_route_pass, min_seconds, repeats),
    }


def calibration(n: int = 100_000, *, repeats: int = 3) -> dict[str, Any]:
    """Seconds for ``hitl.calibration.certify_threshold`` over ``n`` labeled decisions."""
    try:
        import numpy as np

        from hitl import calibration as module
    except ImportError as exc:
        return {"skipped": f"calibration extra not installed ({exc.name})"}
    certify = getattr(module, "certify_threshold", None)
    if certify is None:
        return {"skipped": "hitl.calibration.certify_threshold does not exist in this tree"}
    rng = np.random.default_rng(7)
    confidence = np.clip(rng.beta(8.0, 1.2, n), 0.0, 1.0)
    correct = rng.random(n) < confidence ** 0.25  # confident and mostly right at the top
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = certify(confidence, correct, max_error=0.02, delta=0.05)
        seconds.append(time.perf_counter() - started)
    return {
        "n": n,
        "seconds": round(statistics.median(seconds), 4),
        "best_seconds": round(min(seconds), 4),
        "threshold": getattr(result, "threshold", None),
        "automation_rate": getattr(result, "automation_rate", None),
    }
