"""hitl's own metrics, exported beside the SDK's on the worker's Prometheus endpoint.

They go through Temporal's metric meter (``workflow.metric_meter()`` or
``activity.metric_meter()``), so one ``/metrics`` endpoint serves both, and
workflow metrics are not re-emitted when a workflow is replayed.
"""

from __future__ import annotations

from collections.abc import Mapping

from temporalio.common import MetricMeter

DECISIONS = "hitl_decisions"
ESCALATIONS = "hitl_escalations"
SLA_BREACHES = "hitl_sla_breaches"
PROVISIONAL = "hitl_provisional_deliveries"
REVIEW_LATENCY = "hitl_review_latency"
REVIEW_REFUSALS = "hitl_review_refusals"
JUDGE_FAILURES = "hitl_judge_failures"
EXECUTOR_DEDUP = "hitl_executor_dedup_hits"

# Review latency buckets in seconds: the literature's target is a P95 under 5 minutes.
REVIEW_LATENCY_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)


def count(meter: MetricMeter, name: str, attributes: Mapping[str, str],
          description: str = "") -> None:
    meter.create_counter(name, description or None).add(1, dict(attributes))


def observe_review_latency(meter: MetricMeter, seconds: float,
                           attributes: Mapping[str, str]) -> None:
    meter.create_histogram_float(
        REVIEW_LATENCY, "Seconds from escalation to a reviewer's decision", "s",
    ).record(max(seconds, 0.0), dict(attributes))
