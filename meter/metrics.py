"""Prometheus metrics, one registry per app (no globals: two apps in one test never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class Metrics:
    """The ingest service's metrics."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self._multiprocess_dir = multiprocess_dir
        r = self.registry
        self.events = Counter(
            "meter_events",
            "Events answered by the ingest API, by status and rejection reason.",
            ["status", "reason"],
            registry=r,
        )
        self.requests = Counter(
            "meter_ingest_requests", "Ingest requests by HTTP status.", ["code"], registry=r
        )
        self.request_seconds = Histogram(
            "meter_ingest_request_seconds",
            "Ingest request latency, body read to response.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_events = Histogram(
            "meter_ingest_request_events",
            "Events per ingest request.",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.commit_batch_events = Histogram(
            "meter_committer_batch_events",
            "Events per group-commit flush to Redis.",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "meter_committer_flush_seconds",
            "Duration of one group-commit flush (one Redis round trip).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_length = Gauge(
            "meter_stream_length",
            "Entries in each shard's Redis stream.",
            ["shard"],
            registry=r,
            multiprocess_mode="livemax",  # every worker polls the same streams
        )

    def render(self) -> bytes:
        """The exposition text: this process's metrics, or every worker's when there are several."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
