"""The worker's Temporal runtime: SDK core logs in hitl's logs, metrics when asked.

A runtime is process-wide and must exist before the client connects, so it is
built once here and reused by every connection the process makes.

The SDK core writes its own log lines (colourised text) to standard output
unless told otherwise. A worker forwards them instead into Python logging, so
they come out as hitl's JSON lines on stderr with the rest; a process whose
stdout is a pipe nobody reads (the benchmark's worker was one) otherwise
blocks the core as soon as 64 KiB of warnings pile up.
"""

from __future__ import annotations

import logging

from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from hitl.metrics import REVIEW_LATENCY, REVIEW_LATENCY_BUCKETS

CORE_LOGGER = "hitl.temporal_core"

_runtimes: dict[tuple[str, str], Runtime] = {}


def worker_runtime(metrics_address: str | None, *, core_level: str = "WARN") -> Runtime:
    """The runtime for a worker process: core logs at ``core_level`` and above go
    to the ``hitl.temporal_core`` logger; Prometheus metrics are exported on
    ``metrics_address`` (``host:port``) when it is set."""
    key = (metrics_address or "", core_level)
    if key not in _runtimes:
        metrics = PrometheusConfig(
            bind_address=metrics_address,
            counters_total_suffix=True,
            durations_as_seconds=True,
            histogram_bucket_overrides={REVIEW_LATENCY: list(REVIEW_LATENCY_BUCKETS)},
        ) if metrics_address else None
        forwarding = LogForwardingConfig(
            logger=logging.getLogger(CORE_LOGGER), append_target_to_name=False,
            prepend_target_on_message=False, append_log_fields_to_message=False)
        _runtimes[key] = Runtime(telemetry=TelemetryConfig(
            logging=LoggingConfig(filter=TelemetryFilter(core_level=core_level,
                                                         other_level="ERROR"),
                                  forwarding=forwarding),
            metrics=metrics))
    return _runtimes[key]
