"""Writes grafana/dashboards/*.json from the panel lists below: `python grafana/generate.py`.

The JSON files are what Grafana provisions; this module is their source. To add a panel, add a
`ts(...)` or `stat(...)` to a row (or a new `Row`) and re-run; a test fails when the files and
this module disagree, and another when an expression names a metric no process exports.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 39
# Panels query the datasource picked in the dashboard's `datasource` variable; provisioned
# Grafana defaults it to the provisioned Prometheus (uid `prometheus`), an import asks for one.
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    kind: str  # "timeseries" | "stat"
    title: str
    description: str
    targets: tuple[Target, ...]
    unit: str = "short"
    width: int = 8
    height: int = 8
    thresholds: tuple[tuple[float, str], ...] = ()
    stacked: bool = False


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    variables: tuple[dict[str, Any], ...] = field(default=())


def _targets(targets: tuple[Target | str, ...]) -> tuple[Target, ...]:
    return tuple(t if isinstance(t, Target) else Target(t) for t in targets)


def ts(
    title: str, description: str, *targets: Target | str, unit: str = "short", **kw: Any
) -> Panel:
    """A time series panel."""
    return Panel("timeseries", title, description, _targets(targets), unit=unit, **kw)


def stat(
    title: str, description: str, *targets: Target | str, unit: str = "short", **kw: Any
) -> Panel:
    """A single-value panel (last value), coloured by `thresholds` [(from, colour), …]."""
    kw.setdefault("width", 6)
    kw.setdefault("height", 4)
    return Panel("stat", title, description, _targets(targets), unit=unit, **kw)


def quantiles(metric: str, by: str = "") -> tuple[Target, ...]:
    """p50/p90/p99 of a histogram, summed over processes."""
    labels = f"le{', ' + by if by else ''}"
    prefix = f"{{{{{by}}}}} " if by else ""
    return tuple(
        Target(
            f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[{RATE}])))",
            f"{prefix}p{round(q * 100)}",
        )
        for q in (0.5, 0.9, 0.99)
    )


def _panel_json(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": colour, "value": value} for value, colour in panel.thresholds]
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "thresholds": {"mode": "absolute", "steps": steps},
        "color": {"mode": "thresholds" if panel.kind == "stat" else "palette-classic"},
    }
    options: dict[str, Any]
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
        }
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "textMode": "auto",
            "justifyMode": "auto",
            "orientation": "auto",
        }
    return {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DS,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "datasource": DS,
                "refId": chr(ord("A") + i),
                "expr": t.expr,
                "legendFormat": t.legend or "__auto",
                "range": True,
            }
            for i, t in enumerate(panel.targets)
        ],
    }


def render(dash: Dashboard) -> dict[str, Any]:
    """The provisioning-ready JSON model of one dashboard; rows laid out left to right."""
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row in dash.rows:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y = pid + 1, y + 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel_json(panel, pid, x, y))
            pid, x, line_height = pid + 1, x + panel.width, max(line_height, panel.height)
        y += line_height
    datasource_var = {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }
    return {
        "uid": dash.uid,
        "title": dash.title,
        "description": dash.description,
        "tags": ["meter"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["meter"],
                "title": "meter",
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "templating": {"list": [datasource_var, *dash.variables]},
        "panels": panels,
    }


# --- ingest (`meter serve`) -----------------------------------------------------------------

INGEST = Dashboard(
    uid="meter-ingest",
    title="meter / Ingest",
    description="`meter serve`: events by outcome, request latency, group commit, stream backlog.",
    variables=(
        {
            "name": "high_water",
            "label": "METER_STREAM_HIGH_WATER",
            "type": "constant",
            "query": "2000000",
            "hide": 2,
        },
    ),
    rows=(
        Row(
            "Events",
            (
                ts(
                    "Events/s by status",
                    "Events answered by POST /v1/events: accepted, duplicate, rejected.",
                    Target(f"sum by (status) (rate(meter_events_total[{RATE}]))", "{{status}}"),
                    unit="ops",
                    stacked=True,
                ),
                ts(
                    "Rejected events/s by reason",
                    "Per-item validation failures; the reason is the `reason` in the response.",
                    Target(
                        f'sum by (reason) (rate(meter_events_total{{status="rejected"}}[{RATE}]))',
                        "{{reason}}",
                    ),
                    unit="ops",
                    stacked=True,
                ),
                ts(
                    "Rejected and duplicate share",
                    "Fraction of answered events that were rejected or duplicates (retries).",
                    Target(
                        f'sum(rate(meter_events_total{{status="rejected"}}[{RATE}]))'
                        f" / sum(rate(meter_events_total[{RATE}]))",
                        "rejected",
                    ),
                    Target(
                        f'sum(rate(meter_events_total{{status="duplicate"}}[{RATE}]))'
                        f" / sum(rate(meter_events_total[{RATE}]))",
                        "duplicate",
                    ),
                    unit="percentunit",
                ),
            ),
        ),
        Row(
            "Requests",
            (
                ts(
                    "Requests/s by HTTP status",
                    "503 = backpressure (a stream over its high-water mark) or Redis down.",
                    Target(
                        f"sum by (code) (rate(meter_ingest_requests_total[{RATE}]))", "{{code}}"
                    ),
                    unit="reqps",
                    stacked=True,
                ),
                ts(
                    "Request latency",
                    "Body read to response, including the group commit to Redis.",
                    *quantiles("meter_ingest_request_seconds"),
                    unit="s",
                ),
                ts(
                    "Events per request",
                    "Batch sizes clients send (larger batches are cheaper per event).",
                    Target(
                        f"sum(rate(meter_ingest_request_events_sum[{RATE}]))"
                        f" / sum(rate(meter_ingest_request_events_count[{RATE}]))",
                        "mean",
                    ),
                    *quantiles("meter_ingest_request_events")[2:],
                ),
            ),
        ),
        Row(
            "Group commit and streams",
            (
                ts(
                    "Commit flush latency",
                    "One flush = one Redis round trip carrying every waiting request's events.",
                    *quantiles("meter_committer_flush_seconds"),
                    unit="s",
                ),
                ts(
                    "Events per commit flush",
                    "How many events share one Redis round trip.",
                    Target(
                        f"sum(rate(meter_committer_batch_events_sum[{RATE}]))"
                        f" / sum(rate(meter_committer_batch_events_count[{RATE}]))",
                        "mean",
                    ),
                    Target(
                        f"sum(rate(meter_committer_flush_seconds_count[{RATE}]))",
                        "flushes/s",
                    ),
                ),
                ts(
                    "Stream length by shard",
                    "Entries waiting in each shard's Redis stream for the aggregator.",
                    Target("max by (shard) (meter_stream_length)", "shard {{shard}}"),
                ),
                stat(
                    "Longest stream / high-water",
                    "At 100% the shard refuses events with 503 (METER_STREAM_HIGH_WATER; keep "
                    "the dashboard constant `high_water` in step with it).",
                    Target("max(meter_stream_length) / $high_water"),
                    unit="percentunit",
                    thresholds=((0.5, "orange"), (0.8, "red")),
                ),
            ),
        ),
    ),
)

# --- pipeline (`meter aggregate`; `meter report` joins here) ---------------------------------

PIPELINE = Dashboard(
    uid="meter-pipeline",
    title="meter / Pipeline",
    description="Redis streams to Postgres rollups (`meter aggregate`), usage reported to Stripe.",
    rows=(
        Row(
            "Aggregator",
            (
                ts(
                    "Accepted vs folded events/s",
                    "Ingest accepting faster than the aggregator folds for long means lag grows.",
                    Target(
                        f'sum(rate(meter_events_total{{status="accepted"}}[{RATE}]))', "accepted"
                    ),
                    Target(f"sum(rate(meter_aggregator_events_total[{RATE}]))", "folded"),
                    unit="ops",
                ),
                ts(
                    "Lag by shard",
                    "Age of the oldest entry not yet folded into rollups (0 when drained).",
                    Target("max by (shard) (meter_aggregator_lag_seconds)", "shard {{shard}}"),
                    unit="s",
                ),
                ts(
                    "Unfolded entries by shard",
                    "Entries in each shard's stream not yet folded.",
                    Target("max by (shard) (meter_aggregator_lag_entries)", "shard {{shard}}"),
                ),
                ts(
                    "Flush duration",
                    "One flush: read a batch, one Postgres transaction, trim the stream.",
                    *quantiles("meter_aggregator_flush_seconds"),
                    unit="s",
                ),
                ts(
                    "Entries per flush",
                    "Batch sizes; at METER_AGGREGATOR_BATCH_SIZE the worker is behind.",
                    Target(
                        f"sum(rate(meter_aggregator_batch_events_sum[{RATE}]))"
                        f" / sum(rate(meter_aggregator_batch_events_count[{RATE}]))",
                        "mean",
                    ),
                    *quantiles("meter_aggregator_batch_events")[2:],
                ),
                ts(
                    "Shard leases by worker",
                    "Shards each aggregator process holds; the total should equal METER_SHARDS.",
                    Target("sum by (instance) (meter_aggregator_leases_held)", "{{instance}}"),
                    Target("count(count by (shard) (meter_stream_length))", "shards"),
                ),
                ts(
                    "Duplicates dropped and checkpoint conflicts",
                    "Duplicates: entries Postgres already had (the dedupe backstop). Conflicts: "
                    "flushes rolled back because another worker moved the checkpoint.",
                    Target(f"sum(rate(meter_aggregator_duplicates_total[{RATE}]))", "duplicates/s"),
                    Target(
                        f"sum(rate(meter_aggregator_checkpoint_conflicts_total[{RATE}]))",
                        "conflicts/s",
                    ),
                    unit="ops",
                ),
                ts(
                    "Usage over the dimension guard",
                    "Events folded into the `_other` combination: their customer, meter and "
                    "period had METER_DIMENSION_COMBINATIONS combinations already "
                    "(docs/dimensions.md). Never dropped; priced at the meter's own price.",
                    Target(
                        f"sum(rate(meter_aggregator_dimension_overflow_total[{RATE}]))",
                        "events/s",
                    ),
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Reporter",
            (
                ts(
                    "Outbox depth and oldest age",
                    "Rows not yet accepted by Stripe, and how long the oldest has waited; it must "
                    "stay well under the invoice grace period.",
                    Target("sum(meter_reporter_outbox_depth)", "rows"),
                    Target("max(meter_reporter_outbox_oldest_seconds)", "oldest (s)"),
                ),
                ts(
                    "Meter events sent/s",
                    "Events Stripe accepted, and events it refused for good (never retried).",
                    Target(f"sum(rate(meter_reporter_events_sent_total[{RATE}]))", "sent"),
                    Target(f"sum(rate(meter_reporter_events_failed_total[{RATE}]))", "failed"),
                    unit="ops",
                ),
                ts(
                    "Stripe answers by status",
                    "HTTP status of meter event requests (0: no answer — resent with the same "
                    "identifier).",
                    Target(
                        f"sum by (status) (rate(meter_reporter_stripe_responses_total[{RATE}]))",
                        "{{status}}",
                    ),
                    unit="reqps",
                ),
                ts(
                    "429s and time backing off",
                    "Rate-limited requests, and seconds per second spent in backoff and waiting "
                    "for the limiter.",
                    Target(f"sum(rate(meter_reporter_stripe_429_total[{RATE}]))", "429/s"),
                    Target(f"sum(rate(meter_reporter_backoff_seconds_total[{RATE}]))", "backoff"),
                    Target(
                        f"sum(rate(meter_reporter_limiter_wait_seconds_total[{RATE}]))", "limiter"
                    ),
                ),
                ts(
                    "Usage waiting",
                    "Not reported yet, never dropped: buckets without a subscription item, "
                    "usage of customers without a Stripe id, late usage of an invoiced period "
                    "whose item has no open period to carry it into, and usage whose Stripe "
                    "meter has formula count (`meter sync` says the fix) or is inactive "
                    "(sent once it is reactivated).",
                    Target("sum(meter_reporter_waiting_attribution_buckets)", "no item"),
                    Target("sum(meter_reporter_waiting_customer_units)", "no Stripe customer"),
                    Target("max(meter_reporter_waiting_period_rows)", "no open period"),
                    Target("sum(meter_reporter_waiting_meter_units)", "count or inactive meter"),
                ),
                ts(
                    "Reconciliation drift",
                    "|Stripe − ours| summed over (customer, meter, period) at the last "
                    "reconciliation; anything but 0 needs a look.",
                    Target("max(meter_reporter_reconciliation_drift)", "drift"),
                    Target("max(meter_reporter_reconciliation_drifting_periods)", "periods"),
                ),
            ),
        ),
        Row(
            "Webhooks (notifier)",
            (
                ts(
                    "Deliveries settled/s",
                    "Webhook deliveries a 2xx settled, and those that failed for good (retried "
                    "for METER_NOTIFIER_RETRY_FOR, 3 days by default, docs/webhooks.md).",
                    Target(
                        f"sum by (outcome) (rate(meter_notifier_deliveries_total[{RATE}]))",
                        "{{outcome}}",
                    ),
                    unit="ops",
                ),
                ts(
                    "Attempts by result",
                    "HTTP attempts: 2xx, other statuses, timeouts and connection errors.",
                    Target(
                        f"sum by (result) (rate(meter_notifier_attempts_total[{RATE}]))",
                        "{{result}}",
                    ),
                    unit="reqps",
                ),
                ts(
                    "Event to delivery",
                    "From an event's enqueue to its 2xx: seconds normally, hours while an "
                    "endpoint is down and retries back off.",
                    *quantiles("meter_notifier_delivery_latency_seconds"),
                    unit="s",
                ),
                ts(
                    "Queue",
                    "Deliveries not settled (due or backing off), the oldest one's age, and "
                    "events not fanned out yet (they wait for older writing transactions).",
                    Target("max(meter_notifier_pending_deliveries)", "pending"),
                    Target("max(meter_notifier_oldest_pending_seconds)", "oldest (s)"),
                    Target("max(meter_notifier_events_not_fanned_out)", "not fanned out"),
                ),
                ts(
                    "Endpoints disabled",
                    "Endpoints disabled (by their tenant, or by the notifier after every "
                    "delivery failed for METER_NOTIFIER_DISABLE_AFTER), and the notifier's "
                    "disablings.",
                    Target("max(meter_notifier_endpoints_disabled)", "disabled"),
                    Target(
                        f"sum(increase(meter_notifier_endpoint_disablings_total[{RATE}]))",
                        "disabled for failing",
                    ),
                ),
            ),
        ),
        Row(
            "Stripe usage",
            (
                ts(
                    "Usage Stripe rejected (meter error reports)",
                    "Events Stripe accepted, then reported as errors, by code: unbilled usage.",
                    Target(
                        "sum by (code) "
                        f"(increase(meter_billing_meter_error_reports_total[{RATE}]))",
                        "{{code}}",
                    ),
                    width=12,
                ),
            ),
        ),
    ),
)

# --- billing (`meter serve`'s billing module) ------------------------------------------------

BILLING = Dashboard(
    uid="meter-billing",
    title="meter / Billing",
    description="Revenue, subscriptions, payments, Stripe webhooks and dunning.",
    rows=(
        Row(
            "Revenue and subscriptions",
            (
                ts(
                    "MRR by currency (minor units)",
                    "Licensed prices normalised to a month plus metered items at their projected "
                    "amount; in the currency's minor unit (cents for USD).",
                    Target("max by (currency) (meter_billing_mrr)", "{{currency}}"),
                    width=12,
                ),
                ts(
                    "Subscriptions by status",
                    "Every `meter serve` process reports the same counts; max picks one.",
                    Target("max by (status) (meter_billing_subscriptions)", "{{status}}"),
                    width=12,
                    stacked=True,
                ),
                stat(
                    "Churned (24 h)",
                    "Subscriptions that ended after being live, over the last day.",
                    Target("sum(increase(meter_billing_churned_subscriptions_total[1d]))"),
                    thresholds=((5, "orange"), (20, "red")),
                ),
                stat(
                    "Payment success",
                    "Paid over attempted invoices.",
                    Target("max(meter_billing_invoice_payment_success_ratio)"),
                    unit="percentunit",
                    thresholds=((0, "red"), (0.8, "orange"), (0.95, "green")),
                ),
                stat(
                    "In dunning",
                    "Subscriptions in grace or restricted after a failed payment.",
                    Target("sum(max by (state) (meter_billing_dunning))"),
                    thresholds=((10, "orange"), (50, "red")),
                ),
                stat(
                    "Webhook failures (1 h)",
                    "Deliveries that failed to apply or had a bad signature.",
                    Target(
                        "sum(increase(meter_billing_webhook_events_total"
                        '{outcome=~"error|bad_signature"}[1h]))'
                    ),
                    thresholds=((1, "red"),),
                ),
            ),
        ),
        Row(
            "Payments and dunning",
            (
                ts(
                    "Invoice payments by outcome",
                    "Payment attempts Stripe reported (invoice.paid / invoice.payment_failed).",
                    Target(
                        "sum by (outcome) "
                        f"(increase(meter_billing_invoice_payments_total[{RATE}]))",
                        "{{outcome}}",
                    ),
                    stacked=True,
                ),
                ts(
                    "Dunning by state",
                    "grace: past_due, still entitled; restricted: grace period over.",
                    Target("max by (state) (meter_billing_dunning)", "{{state}}"),
                    stacked=True,
                ),
                ts(
                    "Dunning notifications by kind",
                    "Reminders sent (METER_BILLING_DUNNING_SCHEDULE).",
                    Target(
                        "sum by (kind) "
                        f"(increase(meter_billing_dunning_notifications_total[{RATE}]))",
                        "{{kind}}",
                    ),
                    stacked=True,
                ),
            ),
        ),
        Row(
            "Stripe webhooks",
            (
                ts(
                    "Webhooks/s by outcome",
                    "applied, duplicate, stale (older than what we have), ignored (unknown "
                    "type), bad_signature (check STRIPE_WEBHOOK_SECRET), error.",
                    Target(
                        f"sum by (outcome) (rate(meter_billing_webhook_events_total[{RATE}]))",
                        "{{outcome}}",
                    ),
                    unit="reqps",
                    stacked=True,
                ),
                ts(
                    "Webhooks/s by event type",
                    "Which Stripe events arrive.",
                    Target(
                        f"sum by (type) (rate(meter_billing_webhook_events_total[{RATE}]))",
                        "{{type}}",
                    ),
                    unit="reqps",
                    stacked=True,
                ),
                ts(
                    "Webhook processing time",
                    "Body read to response; Stripe times out deliveries after a few seconds.",
                    *quantiles("meter_billing_webhook_seconds"),
                    unit="s",
                ),
            ),
        ),
    ),
)

DASHBOARDS = {"ingest": INGEST, "pipeline": PIPELINE, "billing": BILLING}


# --- usage by dimension (Postgres) ------------------------------------------------------------
# Usage per customer and combination is too many series for Prometheus, so this dashboard reads
# the rollups in Postgres (the `meter-postgres` datasource) through the same view and function
# the usage API uses: `usage_rollup_values` (each meter's aggregation) and
# `meter_dimension_value` (`none` for a missing key, `_other` over the guard). Sums over hours
# are right for sum and count meters only, so the panels show those.
PG = {"type": "grafana-postgresql-datasource", "uid": "${pg}"}
_USAGE_WHERE = """r.tenant = ${tenant:sqlstring} AND r.meter = ${meter:sqlstring}
  AND (${customer:sqlstring} = '' OR r.customer = ${customer:sqlstring})
  AND r.aggregation IN ('sum', 'count') AND $__timeFilter(r.bucket_start)"""
USAGE_SQL = {
    "by_key": f"""SELECT r.bucket_start AS "time", meter_dimension_value(r.dims, ${{key:sqlstring}})
       AS metric, sum(r.value) AS quantity
FROM usage_rollup_values r
WHERE {_USAGE_WHERE}
GROUP BY 1, 2 ORDER BY 1, 2""",
    "combinations": f"""SELECT CASE r.dims WHEN '' THEN 'none' ELSE r.dims END AS combination,
       sum(r.value) AS quantity, sum(r.event_count) AS events
FROM usage_rollup_values r
WHERE {_USAGE_WHERE}
GROUP BY 1 ORDER BY 2 DESC, 1""",
}
USAGE_VARIABLE_SQL = {
    "tenant": "SELECT DISTINCT tenant FROM meter_dimensions ORDER BY 1",
    "meter": "SELECT DISTINCT meter FROM meter_dimensions WHERE tenant = ${tenant:sqlstring} "
    "ORDER BY 1",
    "key": "SELECT DISTINCT unnest(keys) FROM meter_dimensions WHERE tenant = "
    "${tenant:sqlstring} AND meter = ${meter:sqlstring} ORDER BY 1",
}


def _sql_panel(
    pid: int, kind: str, title: str, description: str, sql: str, fmt: str, grid: dict[str, int]
) -> dict[str, Any]:
    custom = {"drawStyle": "bars", "fillOpacity": 80, "stacking": {"mode": "normal"}}
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": PG,
        "gridPos": grid,
        "fieldConfig": {"defaults": {"custom": custom} if kind == "timeseries" else {}},
        "options": {"legend": {"displayMode": "table", "placement": "right", "showLegend": True}}
        if kind == "timeseries"
        else {"showHeader": True},
        "targets": [
            {"datasource": PG, "refId": "A", "rawQuery": True, "editorMode": "code",
             "format": fmt, "rawSql": sql}
        ],
    }  # fmt: skip


def render_usage() -> dict[str, Any]:
    """The usage-by-dimension dashboard: SQL panels on the rollups."""

    def query_var(name: str, label: str) -> dict[str, Any]:
        sql = USAGE_VARIABLE_SQL[name]
        return {"name": name, "label": label, "type": "query", "datasource": PG,
                "query": sql, "definition": sql, "refresh": 1, "hide": 0, "sort": 1,
                "current": {}, "options": []}  # fmt: skip

    variables = [
        {"name": "pg", "label": "Postgres", "type": "datasource",
         "query": "grafana-postgresql-datasource", "current": {}, "hide": 0, "refresh": 1,
         "regex": "", "options": []},
        query_var("tenant", "Tenant"),
        query_var("meter", "Meter"),
        query_var("key", "Dimension"),
        {"name": "customer", "label": "Customer (empty: all)", "type": "textbox", "query": "",
         "current": {"text": "", "value": ""}, "hide": 0},
    ]  # fmt: skip
    return {
        "uid": "meter-usage",
        "title": "meter / Usage by dimension",
        "description": "Usage of a meter broken down by one of its dimension keys, from the "
        "rollups in Postgres (sum and count meters; docs/dimensions.md).",
        "tags": ["meter"],
        "timezone": "utc",
        "editable": True,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "annotations": {"list": []},
        "templating": {"list": variables},
        "panels": [
            _sql_panel(
                1, "timeseries", "Usage per hour by $key",
                "Quantity folded per hour bucket, one series per value of the chosen key "
                "(`none`: events without it; `_other`: usage over the cardinality guard).",
                USAGE_SQL["by_key"], "time_series", {"h": 10, "w": 24, "x": 0, "y": 0},
            ),
            _sql_panel(
                2, "table", "Combinations in the time range",
                "Quantity and events per combination of dimension values.",
                USAGE_SQL["combinations"], "table", {"h": 10, "w": 24, "x": 0, "y": 10},
            ),
        ],
    }  # fmt: skip


def rendered() -> dict[str, str]:
    """File name -> JSON text, exactly as written to grafana/dashboards/."""
    out = {
        f"{name}.json": json.dumps(render(dash), indent=2) + "\n"
        for name, dash in DASHBOARDS.items()
    }
    out["usage.json"] = json.dumps(render_usage(), indent=2) + "\n"
    return out


def main() -> int:
    DASHBOARDS_DIR.mkdir(exist_ok=True)
    for name, text in rendered().items():
        (DASHBOARDS_DIR / name).write_text(text)
        print(f"wrote {DASHBOARDS_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
