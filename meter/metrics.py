"""Prometheus metrics, one registry per app (no globals: two apps in one test never collide),
and the metrics server every long-running process exposes them on.

Metrics are never served on the public API port: they include revenue (MRR, payment outcomes).
Each process serves them on its own port, bound to METER_METRICS_HOST (loopback by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from meter.errors import ConfigError
from meter.tasks import cancel_and_wait

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


class HotCounter:
    """A counter the ingest hot path adds to in plain Python; `Metrics.fold` carries what it
    gained to its prometheus-client series (whose `inc` takes a lock and, with several
    workers, writes a file: a few microseconds a request)."""

    __slots__ = ("_folded", "_target", "value")

    def __init__(self, target: Counter) -> None:
        self._target = target
        self.value = 0
        self._folded = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def fold(self) -> None:
        value = self.value  # one read: the event loop may add meanwhile (the next fold has it)
        if value != self._folded:
            self._target.inc(value - self._folded)
            self._folded = value


class HotHistogram:
    """A histogram the hot path observes in plain Python (a bisect and two additions), carried
    to its prometheus-client Histogram by `Metrics.fold`."""

    __slots__ = ("_bounds", "_folded", "_folded_sum", "_target", "counts", "sum")

    def __init__(self, target: Histogram) -> None:
        self._target = target
        # The target's own bounds, +Inf last; `le` is inclusive: bisect_left finds a value's.
        self._bounds = list(target._upper_bounds)
        self.counts = [0] * len(self._bounds)
        self.sum = 0.0
        self._folded = [0] * len(self._bounds)
        self._folded_sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value

    def fold(self) -> None:
        # prometheus-client keeps one value per bucket (made cumulative when collected) and
        # the sum; tests/unit/test_metrics.py checks a fold gives what `observe` would.
        buckets = self._target._buckets
        for i, count in enumerate(self.counts):
            if count != self._folded[i]:
                buckets[i].inc(count - self._folded[i])
                self._folded[i] = count
        total = self.sum
        if total != self._folded_sum:
            self._target._sum.inc(total - self._folded_sum)
            self._folded_sum = total


class _FoldOnCollect(Collector):
    """Registered first, so a scrape folds the hot-path counts before the series are read."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        self._metrics.fold()
        return []


# How stale a worker's hot-path series may be in its supervisor's scrape.
FOLD_EVERY_S = 0.25

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class Metrics:
    """The ingest service's metrics."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self._multiprocess_dir = multiprocess_dir
        self._fold_lock = threading.Lock()  # scrapes run on the metrics server's thread
        r = self.registry
        r.register(_FoldOnCollect(self))
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
        # Exported at 0, so an alert sees the series; counted on the hot path like the below.
        self.warned = {
            warning: HotCounter(self.warnings.labels(warning))
            for warning in ("unknown_customer", "unknown_meter")
        }
        self.requests = Counter(
            "meter_ingest_requests", "Ingest requests by HTTP status.", ["code"], registry=r
        )
        # The series every ingest request touches are counted in plain Python and folded into
        # these at each scrape, in a worker every FOLD_EVERY_S (docs/performance.md).
        self.events_accepted = HotCounter(self.events.labels("accepted", ""))
        self.requests_ok = HotCounter(self.requests.labels("200"))
        request_seconds = Histogram(
            "meter_ingest_request_seconds",
            "Ingest request latency, body read to response.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_seconds = HotHistogram(request_seconds)
        request_events = Histogram(
            "meter_ingest_request_events",
            "Events per ingest request.",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.request_events = HotHistogram(request_events)
        self._hot: tuple[HotCounter | HotHistogram, ...] = (
            *self.warned.values(),
            self.events_accepted,
            self.requests_ok,
            self.request_seconds,
            self.request_events,
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

    def fold(self) -> None:
        """Carry the hot-path counts into their prometheus-client series: at each scrape of
        this process, and every FOLD_EVERY_S in a worker (its supervisor reads the files)."""
        with self._fold_lock:
            for hot in self._hot:
                hot.fold()

    @contextlib.asynccontextmanager
    async def folding(self) -> AsyncIterator[None]:
        """In a worker, fold every FOLD_EVERY_S while the block runs, and once more at its end;
        a process of its own folds at each scrape and needs nothing more."""
        if self._multiprocess_dir is None:
            yield
            return

        async def run() -> None:
            while True:
                await asyncio.sleep(FOLD_EVERY_S)
                self.fold()

        task = asyncio.create_task(run(), name="metrics-fold")
        try:
            yield
        finally:
            await cancel_and_wait(task)
            self.fold()

    def render(self) -> bytes:
        """The exposition text: this process's metrics, or every worker's when there are several."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)  # which folds first (_FoldOnCollect)
        self.fold()  # this worker's own counts into its file, before the files are read
        return generate_latest(multiprocess_registry(self._multiprocess_dir))
