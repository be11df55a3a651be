"""Prometheus metrics, one registry per app (no globals: two apps in one test never collide),
and the metrics server every long-running process exposes them on.

Metrics are never served on the public API port: they include revenue (MRR, payment outcomes).
Each process serves them on its own port, bound to METER_METRICS_HOST (loopback by default).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from meter.errors import ConfigError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def metrics_server(host: str, port: int, registry: Collector) -> Iterator[None]:
    """Serve `registry` at http://host:port/metrics (prometheus-client's server, on a thread of
    its own) while the block runs; port 0: no server."""
    if not port:
        yield
        return
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"the metrics server cannot listen on {host}:{port} ({exc.strerror}); choose "
            "another port (METER_METRICS_PORT, METER_AGGREGATOR_METRICS_PORT, "
            "METER_REPORTER_METRICS_PORT; 0: no metrics server)"
        ) from None
    log.info("metrics served", extra={"host": host, "port": port})
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def multiprocess_registry(path: str) -> CollectorRegistry:
    """Every worker's metrics, merged from prometheus-client's multiprocess directory."""
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
    return merged


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
        self.warnings = Counter(
            "meter_event_warnings",
            "Events accepted with a warning: usage for a customer or meter billing does not know "
            "(yet), which waits unattributed until it does (METER_STRICT rejects them instead).",
            ["warning"],
            registry=r,
        )
        for warning in ("unknown_customer", "unknown_meter"):
            self.warnings.labels(warning)  # exported at 0, so an alert sees the series
        self.requests = Counter(
            "meter_ingest_requests", "Ingest requests by HTTP status.", ["code"], registry=r
        )
        # The series every ingest request touches, bound once: `labels()` per request cost
        # about a microsecond each (docs/performance.md).
        self.events_accepted = self.events.labels("accepted", "")
        self.requests_ok = self.requests.labels("200")
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
        return generate_latest(multiprocess_registry(self._multiprocess_dir))
