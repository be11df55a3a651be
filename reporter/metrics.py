"""The reporter's Prometheus metrics, on a registry of their own (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ReporterMetrics:
    """Outbox depth/age, events sent (rate() gives events/s), Stripe responses, 429s, backoff
    time, session renewals, waiting usage, late usage and reconciliation drift."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.outbox_depth = Gauge(
            "meter_reporter_outbox_depth", "Outbox rows not yet sent.", registry=r
        )
        self.outbox_oldest = Gauge(
            "meter_reporter_outbox_oldest_seconds",
            "Age of the oldest outbox row not yet sent (0 when empty).",
            registry=r,
        )
        self.events_sent = Counter(
            "meter_reporter_events_sent", "Meter events Stripe accepted.", registry=r
        )
        self.responses = Counter(
            "meter_reporter_stripe_responses",
            "Stripe answers to meter event requests, by HTTP status (0: no answer).",
            ["status"],
            registry=r,
        )
        self.rate_limited = Counter(
            "meter_reporter_stripe_429", "Requests Stripe answered with 429.", registry=r
        )
        self.backoff_seconds = Counter(
            "meter_reporter_backoff_seconds", "Time spent backing off before retries.", registry=r
        )
        self.limiter_wait_seconds = Counter(
            "meter_reporter_limiter_wait_seconds",
            "Time spent waiting for the rate limiter.",
            registry=r,
        )
        self.session_renewals = Counter(
            "meter_reporter_session_renewals", "v2 meter event sessions created.", registry=r
        )
        self.waiting_attribution = Gauge(
            "meter_reporter_waiting_attribution_buckets",
            "Usage waiting for attribution: buckets without a subscription item (not reported).",
            registry=r,
        )
        self.waiting_customer = Gauge(
            "meter_reporter_waiting_customer_units",
            "Usage waiting for a Stripe customer id (not reported yet, never dropped).",
            registry=r,
        )
        self.waiting_period = Gauge(
            "meter_reporter_waiting_period_rows",
            "Outbox rows of an invoiced period waiting for an open period of their subscription "
            "item to be carried into (not sent yet, never dropped).",
            registry=r,
        )
        self.waiting_meter = Gauge(
            "meter_reporter_waiting_meter_units",
            "Usage waiting for a Stripe meter meter can report to: its event name's Stripe meter "
            "has formula count (`meter sync` says the fix) or is inactive (reactivate it); units "
            "not planned yet and pending outbox rows held (not sent yet, never dropped).",
            registry=r,
        )
        self.late = Counter(
            "meter_reporter_late_usage",
            "Usage of a period whose invoice may be final, by what was done: carried (planned "
            "into the item's open period), moved (an unsent row moved there when claimed), "
            "waiting (no open period known yet), recorded (absolute, not sendable), trial "
            "(of a trial period: charged by no invoice, not sent), gone (its item bills the "
            "meter no more, deleted or repriced onto another meter: billed by no invoice, not "
            "sent), voided (of a period whose invoice was voided: free, not sent) or "
            "customer_deleted (of a deleted Stripe customer's subscription: billed by nothing, "
            "not sent).",
            ["action"],
            registry=r,
        )
        self.held = Counter(
            "meter_reporter_absolute_versions_held",
            "Versions of a max/last/unique_count period not sent when planned, as no whole "
            "second after the previous version's was available: deferred (planned again by a "
            "later build) or recorded (none left in the period: outbox row `late`, not sent).",
            ["action"],
            registry=r,
        )
        self.overlapping = Counter(
            "meter_reporter_absolute_windows_overlapping",
            "Versions of a max/last/unique_count period sent while another window billing the "
            "same customer's Stripe meter overlaps it with other bounds (other anchors, an item "
            "added mid-period): Stripe bills both lines from one `last` value, so one of them "
            "may not show its own window's usage (docs/billing.md, absolute meters).",
            registry=r,
        )
        self.failed = Counter(
            "meter_reporter_events_failed", "Meter events Stripe refused for good.", registry=r
        )
        self.horizon_checks = Counter(
            "meter_reporter_horizon_checks",
            "Rows past the dedupe horizon checked against event_summaries, by verdict.",
            ["verdict"],
            registry=r,
        )
        self.drift = Gauge(
            "meter_reporter_reconciliation_drift",
            "Sum of |Stripe − ours| over (customer, meter, period) at the last reconciliation.",
            registry=r,
        )
        self.drifting = Gauge(
            "meter_reporter_reconciliation_drifting_periods",
            "(customer, meter, period)s whose totals differ at the last reconciliation.",
            registry=r,
        )
