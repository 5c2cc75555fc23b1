"""``hitl bench``: throughput, latency and scale of hitl against a bare-Temporal baseline.

The harness starts its own dev server, a real hitl worker and a baseline worker
(each a subprocess, so resident memory and CPU are measured per process), runs
the same load through both and reports ratios, which stay meaningful on a busy
or small machine where absolute figures do not. See ``docs/BENCHMARKS.md``.
"""
