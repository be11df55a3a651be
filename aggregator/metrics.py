"""The aggregator's Prometheus metrics, on a registry of their own (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZES = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000)


class AggregatorMetrics:
    """Throughput (rate() of the counters), lag per shard, batch sizes, transaction time."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "meter_aggregator_events",
            "Events folded into rollups (rate() gives events/s).",
            ["shard"],
            registry=r,
        )
        self.duplicates = Counter(
            "meter_aggregator_duplicates",
            "Stream entries dropped because Postgres already had the event (the backstop).",
            ["shard"],
            registry=r,
        )
        self.batch_events = Histogram(
            "meter_aggregator_batch_events",
            "Stream entries per flush transaction.",
            buckets=_SIZES,
            registry=r,
        )
        self.flush_seconds = Histogram(
            "meter_aggregator_flush_seconds",
            "Duration of one flush: read, transaction, trim.",
            buckets=_SECONDS,
            registry=r,
        )
        self.lag_seconds = Gauge(
            "meter_aggregator_lag_seconds",
            "Age of the oldest entry not yet folded, per shard (0 when drained).",
            ["shard"],
            registry=r,
        )
        self.lag_entries = Gauge(
            "meter_aggregator_lag_entries",
            "Entries in the shard's stream not yet folded (the stream is trimmed to them).",
            ["shard"],
            registry=r,
        )
        self.leases = Gauge(
            "meter_aggregator_leases_held", "Shards this worker holds a lease on.", registry=r
        )
        self.stuck_buckets = Gauge(
            "meter_aggregator_unattributed_stuck_buckets",
            "Unattributed buckets holding events missing from the raw log that no one item "
            "period covers whole, as of the last re-attribution sweep "
            "(docs/billing.md, Re-attribution).",
            registry=r,
        )
        self.dimension_overflow = Counter(
            "meter_aggregator_dimension_overflow",
            "Events folded into the `_other` combination: their customer, meter and period had "
            "METER_DIMENSION_COMBINATIONS combinations already (docs/dimensions.md).",
            registry=r,
        )
        self.checkpoint_conflicts = Counter(
            "meter_aggregator_checkpoint_conflicts",
            "Flushes rolled back because another worker had advanced the checkpoint.",
            registry=r,
        )
