"""The process's Temporal runtime: Prometheus metrics when an address is set.

A runtime is process-wide and must exist before the client connects, so it is
built once here and reused by every connection the process makes.
"""

from __future__ import annotations

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from hitl.metrics import REVIEW_LATENCY, REVIEW_LATENCY_BUCKETS

_runtimes: dict[str, Runtime] = {}


def runtime_for(metrics_address: str | None) -> Runtime | None:
    """A runtime exporting Prometheus metrics on ``metrics_address`` (``host:port``)."""
    if not metrics_address:
        return None
    if metrics_address not in _runtimes:
        _runtimes[metrics_address] = Runtime(telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=metrics_address,
                counters_total_suffix=True,
                durations_as_seconds=True,
                histogram_bucket_overrides={REVIEW_LATENCY: list(REVIEW_LATENCY_BUCKETS)},
            )))
    return _runtimes[metrics_address]
