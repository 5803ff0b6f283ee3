"""Prometheus metrics of one server: latency histograms per endpoint (p50/p95/p99 come from their buckets),
request and error counts, batch sizes, the embedding-cache hit rate, resident memory and the index version."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60)


def resident_bytes() -> float:
    """This process's resident memory (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return float(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0.0


class Metrics:
    def __init__(self, state):
        self.registry = CollectorRegistry()
        self.latency = Histogram("ragtune_request_seconds", "request latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.requests = Counter("ragtune_requests", "requests by endpoint and status", ["endpoint", "status"],
                                registry=self.registry)
        self.errors = Counter("ragtune_errors", "requests answered with a 4xx or 5xx", ["endpoint"],
                              registry=self.registry)
        self.batch = Histogram("ragtune_batch_size", "items per model call", ["model"],
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        Gauge("ragtune_embedding_cache_hit_rate", "share of embedded texts found in the cache",
              registry=self.registry).set_function(lambda: state.cache.hit_rate)
        Gauge("ragtune_resident_memory_bytes", "resident memory of the server process",
              registry=self.registry).set_function(resident_bytes)
        self.version = Gauge("ragtune_index_version", "the index version being served (v000003 is 3)",
                             registry=self.registry)
        self.version.set_function(lambda: int(state.live.current().folder.name.lstrip("v") or 0))

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        self.latency.labels(endpoint).observe(seconds)
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
