"""The evaluator's Prometheus metrics, on a registry of their own (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class EvaluatorMetrics:
    """Evaluations, events fired by type, touches read and their lag, sweeps."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.evaluations = Counter(
            "meter_evaluator_evaluations", "(rule, customer) evaluations.", registry=r
        )
        self.fired = Counter(
            "meter_evaluator_events",
            "Webhook events the evaluator enqueued, by type (each once per subject).",
            ["type"],
            registry=r,
        )
        self.touches = Counter(
            "meter_evaluator_touches", "Touches read from the aggregator's stream.", registry=r
        )
        self.touch_lag = Histogram(
            "meter_evaluator_touch_lag_seconds",
            "From the aggregator's touch to its evaluation done.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.sweep_seconds = Gauge(
            "meter_evaluator_sweep_seconds", "Duration of the last full sweep.", registry=r
        )
        self.last_sweep = Gauge(
            "meter_evaluator_last_sweep_timestamp_seconds",
            "When the last full sweep ended (unix s).",
            registry=r,
        )
        self.errors = Counter(
            "meter_evaluator_errors",
            "Failures logged: rounds retried, and rules, customers or touches skipped.",
            registry=r,
        )
        self.dead_lettered = Counter(
            "meter_evaluator_touches_dead_lettered",
            "Touches acknowledged unevaluated after too many deliveries (the sweep covers them).",
            registry=r,
        )
