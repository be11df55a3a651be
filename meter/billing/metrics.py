"""Billing metrics, registered on the app's own registry (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class BillingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.webhook_events = Counter(
            "meter_billing_webhook_events",
            "Stripe webhook deliveries by event type and outcome (applied, duplicate, stale, "
            "ignored = unknown type, bad_signature, error).",
            ["type", "outcome"],
            registry=r,
        )
        self.webhook_seconds = Histogram(
            "meter_billing_webhook_seconds",
            "Webhook processing time, body read to response.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.subscriptions = Gauge(
            "meter_billing_subscriptions",
            "Subscriptions by status.",
            ["status"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.mrr = Gauge(
            "meter_billing_mrr",
            "Monthly recurring revenue in the currency's minor unit: active and past_due "
            "subscriptions' licensed prices normalised to a month, plus metered items at their "
            "current projected amount (usage so far at its average pace to the period end, once "
            "the period is old enough: meter/pricing/runrate.py).",
            ["currency"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.churned = Counter(
            "meter_billing_churned_subscriptions",
            "Subscriptions that ended (canceled or expired) after being live.",
            registry=r,
        )
        self.invoice_payments = Counter(
            "meter_billing_invoice_payments",
            "Invoice payment attempts reported by Stripe, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.payment_success_ratio = Gauge(
            "meter_billing_invoice_payment_success_ratio",
            "Attempted invoices that are paid, over all attempted invoices.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.dunning = Gauge(
            "meter_billing_dunning",
            "Subscriptions in dunning, by state (grace, restricted).",
            ["state"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.dunning_notifications = Counter(
            "meter_billing_dunning_notifications",
            "Dunning notifications sent, by kind.",
            ["kind"],
            registry=r,
        )
        self.meter_errors = Counter(
            "meter_billing_meter_error_reports",
            "Usage Stripe rejected after accepting it (meter error reports), in events.",
            ["code"],
            registry=r,
        )
