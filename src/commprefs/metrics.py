"""Prometheus metrics beyond the per-request ones of api/pipeline.py, and the /metrics exposition.

With `serve --workers N` (N > 1) the processes write their values to files in a directory that
`serve` creates and names in PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode): any
worker answering /metrics reports the sum over every worker (counters, histograms), or the most
recent value (the webhook backlog, which each worker measures for the whole database).
"""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

WRITE_GROUP_SIZE = Histogram(
    "commprefs_write_group_size",
    "Writes committed together in one transaction by the group-commit writer",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
WEBHOOK_BACKLOG = Gauge(
    "commprefs_webhook_backlog",
    "Events after the positions of the enabled webhook endpoints, not yet delivered (each endpoint counts "
    "up to 10,000); measured every few seconds by the webhook sender",
    multiprocess_mode="mostrecent",
)
RATE_LIMITED = Counter("commprefs_rate_limited_total", "API calls refused with 429 by a rate limit", ["policy"])


def exposition() -> bytes:
    """The text /metrics answers: this process's metrics, or every worker's in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
