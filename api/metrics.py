"""Prometheus metrics of the HTTP API (``GET /metrics``), with prometheus_client.

Single process (tests, ``--dev``): the metrics live in a registry owned by the app.  Under gunicorn,
``simsearch serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory before the workers start, so each
worker writes its values to memory-mapped files there and ``/metrics`` (answered by any worker) sums
every worker's counters and histograms; a dead worker's files are marked by the ``child_exit`` hook.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class ApiMetrics:
    """Request counts by endpoint/method/status, request latency and search-step latency histograms."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self._multiprocess = multiprocess_enabled()
        # in multiprocess mode values go to the shared files; registering them here would double count
        self._registry = CollectorRegistry()
        target = None if self._multiprocess else self._registry
        self.requests = Counter("simsearch_http_requests", "HTTP requests answered",
                                ["endpoint", "method", "status"], registry=target)
        self.latency = Histogram("simsearch_http_request_duration_seconds", "Time to answer an HTTP request",
                                 ["endpoint", "method"], buckets=LATENCY_BUCKETS, registry=target)
        self.stage = Histogram("simsearch_search_stage_seconds", "Time of one step of a search request",
                               ["stage"], buckets=LATENCY_BUCKETS, registry=target)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint, method).observe(seconds)

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage in ("decode", "embed", "search"):
            if stage in timings_ms:
                self.stage.labels(stage).observe(timings_ms[stage] / 1000.0)

    def render(self) -> bytes:
        """The text exposition format of every metric (all workers' in multiprocess mode)."""
        if self._multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self._registry)
