"""The notifier's Prometheus metrics, on a registry of their own (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From an event's enqueue to its 2xx: seconds when all is well, hours when retrying.
LATENCY_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 3 * 86400)


OUTCOMES = ("succeeded", "failed")
RESULTS = ("2xx", "3xx", "4xx", "5xx", "timeout", "error")


class NotifierMetrics:
    """Deliveries by outcome, attempts by result, latency from event to delivery, the queue
    (pending deliveries, the oldest one's age, events not fanned out), disabled endpoints and
    rounds that failed."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.deliveries = Counter(
            "meter_notifier_deliveries",
            "Deliveries settled, by outcome: succeeded (a 2xx) or failed (retries exhausted).",
            ["outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "meter_notifier_attempts",
            "HTTP attempts, by result: 2xx, 3xx, 4xx, 5xx, timeout or error (no answer).",
            ["result"],
            registry=r,
        )
        self.fanned_out = Counter(
            "meter_notifier_events_fanned_out",
            "Webhook events fanned out to their endpoints' deliveries.",
            registry=r,
        )
        self.latency = Histogram(
            "meter_notifier_delivery_latency_seconds",
            "From an event's enqueue to its delivery's 2xx.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.pending = Gauge(
            "meter_notifier_pending_deliveries",
            "Deliveries not settled yet (due or backing off), of enabled endpoints.",
            registry=r,
        )
        self.oldest_pending = Gauge(
            "meter_notifier_oldest_pending_seconds",
            "Age of the oldest delivery not settled yet (0 when none).",
            registry=r,
        )
        self.unfanned = Gauge(
            "meter_notifier_events_not_fanned_out",
            "Webhook events not fanned out yet.",
            registry=r,
        )
        self.endpoints_disabled = Gauge(
            "meter_notifier_endpoints_disabled",
            "Webhook endpoints disabled (for failing, or by their tenant).",
            registry=r,
        )
        self.disablings = Counter(
            "meter_notifier_endpoint_disablings",
            "Endpoints the notifier disabled because every delivery failed for too long.",
            registry=r,
        )
        self.pruned = Counter(
            "meter_notifier_pruned",
            "Rows deleted past METER_NOTIFIER_RETENTION, by table.",
            ["table"],
            registry=r,
        )
        self.errors = Counter(
            "meter_notifier_errors",
            "Rounds that failed on Postgres (down, a connection closed, a pool timeout) and "
            "were retried.",
            registry=r,
        )
        # Every series from the start: rate() and the dashboards see zeros, not gaps.
        for outcome in OUTCOMES:
            self.deliveries.labels(outcome)
        for result in RESULTS:
            self.attempts.labels(result)
