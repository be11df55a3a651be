"""Every SQL statement of the usage API, by name. Schema: migrations/0002_usage.sql (rollups,
checkpoints, meter definitions) and 0003_billing.sql (customers, subscriptions, prices).

Customers are looked up with `meter.billing.queries.CUSTOMER_BY_KEY` and their plan with
`CURRENT_SUBSCRIPTION`, so "which customer, which subscription" means the same in both APIs.
"""

from __future__ import annotations

from meter.billing import queries as billing_queries

# A customer (by our id or the cus_ id, as billing's CUSTOMER_BY_KEY) with its current
# subscription (rank 1, billing's SUBSCRIPTION_PREFERENCE) and every other live one ($3: the live
# statuses; Stripe bills a meter's usage on each of them) with its trial, cancellation and paused
# collection (meter/pricing/lifecycle.py), each with every item of it — removed
# ones too: usage of their past periods still shows — with its price as synced and its meter's
# event name and aggregation: a local definition, else the Stripe meter's formula for every
# tenant, else sum (the rule of usage_rollup_values, migrations/0012_meter_formulas.sql). One
# statement: a row per item, in subscription rank order, or one row of nulls after the customer
# when it has no subscription or no items; no row for an unknown customer. The price (and meter)
# of an item is that of its latest period inside its Stripe period, and `price_since` where that
# period starts (an item added or repriced mid-period, meter/billing/store.py): a change whose
# time is not known yet (Stripe's answer to our own change, before its webhook) keeps the
# period's price, not the new one over usage it does not bill. (Billing writes an item's periods
# in the transaction that writes the item, whose trigger announces the plan change.) Items come
# in their subscription's order, as its invoice's lines; `last_billed_at` is when the subscription's
# latest invoice with a positive subtotal was created (a `once` coupon is used up by such an
# invoice: pricing.Discount.used_up; invoices notify the plan cache, migrations/0017).
PLAN = f"""
SELECT c.stripe_id, c.external_id, s.id AS subscription, s.status, s.discounts,
    s.tax_rates AS subscription_tax_rates, s.trial_start, s.trial_end, s.cancel_at_period_end,
    s.cancel_at, s.pause_behavior, s.pause_resumes_at, s.ended_at, s.billing_mode,
    s.last_billed_at,
    i.id, coalesce(since.price, i.price) AS price, i.quantity, i.current_period_start,
    i.current_period_end, i.removed_at, i.tax_rates,
    coalesce(since.period_start, i.current_period_start) AS price_since,
    p.currency, p.billing_scheme, p.unit_amount, p.unit_amount_decimal, p.tiers_mode, p.tiers,
    p.transform_quantity, p.recurring_interval, p.recurring_interval_count, p.usage_type,
    m.event_name, coalesce(d.aggregation, f.aggregation, 'sum') AS aggregation,
    coalesce(NOT f.sendable, false) AS held
FROM ({billing_queries.CUSTOMER_BY_KEY}) c
LEFT JOIN LATERAL (
    SELECT id, status, discounts, tax_rates, trial_start, trial_end, cancel_at_period_end,
        cancel_at, pause_behavior, pause_resumes_at, ended_at, billing_mode,
        (SELECT max(v.stripe_created) FROM invoices v
         WHERE v.subscription = subscriptions.id AND v.subtotal > 0) AS last_billed_at,
        row_number() OVER ({billing_queries.SUBSCRIPTION_PREFERENCE}) AS rank
    FROM subscriptions
    WHERE customer = c.stripe_id
) s ON s.rank = 1 OR s.status = ANY($3::text[])
LEFT JOIN subscription_items i ON i.subscription = s.id
LEFT JOIN LATERAL (
    SELECT period_start, price, meter FROM subscription_item_periods
    WHERE item = i.id AND period_start >= i.current_period_start
        AND period_start < i.current_period_end
    ORDER BY period_start DESC LIMIT 1
) since ON true
LEFT JOIN prices p ON p.id = coalesce(since.price, i.price)
LEFT JOIN billing_meters m ON m.id = coalesce(
    CASE WHEN since.price IS NULL THEN i.meter ELSE since.meter END, p.meter)
LEFT JOIN meter_definitions d ON d.tenant = $1 AND d.meter = m.event_name
LEFT JOIN stripe_meter_formulas f ON f.meter = m.event_name
ORDER BY s.rank, i.position, i.id
"""

# The customer's invoice items that no invoice took yet (Stripe puts them on the subscription's
# next invoice), by subscription.
PENDING_ITEMS = """
SELECT subscription, id, subscription_item, amount, currency, proration, period_start, period_end
FROM pending_invoice_items
WHERE customer = $1 AND invoice IS NULL AND NOT deleted AND subscription IS NOT NULL
ORDER BY subscription, id
"""

# The invoice items taken by the subscription's invoice for the period that ends at $2 (a
# cycle invoice's period is the one it bills in arrears).
TAKEN_ITEMS = """
SELECT p.subscription, p.id, p.subscription_item, p.amount, p.currency, p.proration,
    p.period_start, p.period_end
FROM pending_invoice_items p
JOIN invoices v ON v.id = p.invoice
WHERE p.subscription = $1 AND v.subscription = $1 AND v.period_end = $2 AND NOT p.deleted
ORDER BY p.id
"""

# The period of each item that contains the instant $2 (past periods are kept here only).
ITEM_PERIODS_AT = """
SELECT item, period_start, period_end FROM subscription_item_periods
WHERE item = ANY($1::text[]) AND period_start <= $2 AND period_end > $2
"""

# Read in the same snapshot as the rollups: the rollups hold exactly the entries up to these.
CHECKPOINTS = "SELECT stream, last_id FROM stream_checkpoints WHERE stream = ANY($1::text[])"
# Of the keys $1 (flagged pending entries, meter/usage/pending.py), those already folded.
FOLDED_KEYS = "SELECT key FROM usage_event_keys WHERE key = ANY($1::bytea[])"


def _carried_out_of(start: str) -> str:
    """Outbox rows of the period starting at `start` that its invoice does not bill: carried
    into a later one, or waiting for one (reporter/periods.py)."""
    return f"period_start = {start} AND (carried_from IS NOT NULL OR status = 'waiting')"


def _carried_into(start: str, end: str) -> str:
    """Outbox rows carried into the period [start, end), by the event time they were sent at."""
    return f"event_time >= {start} AND event_time < {end} AND carried_from IS NOT NULL"


# For a batch of usage requests (store.read_item_usage, batched in routes._shared_reads): the stream
# checkpoints, and each request's (item, period) per meter from its running total
# (migrations/0007_usage_totals.sql) — one row per meter instead of ~720 hourly buckets a month — in
# ONE statement, so that all come from one snapshot (a stream entry is in these totals iff its id is
# at or before its stream's checkpoint here) without a transaction's extra round trips. $2 is a JSON
# array with one object per (request, customer key, item): n numbers the requests of the batch and
# tags their rows, t c i p e are tenant, customer key, item, period start and end (unix seconds);
# checkpoint rows have a null request. $3 are the keys of flagged pending entries (pending.py): a
# row with `folded` set for each one usage_event_keys holds. A customer whose events named it by
# both keys (our id and the cus_ id) has a row per key; the caller folds them. It runs on a
# connection of its own with SNAPSHOT_SETTINGS; OFFSET 0 keeps the lookup a subquery run once per
# element.
# Usage of a period whose invoice was final before the reporter sent it is billed elsewhere
# (reporter/periods.py): the reporter's outbox (read here, in the same snapshot; written only by the
# reporter) has it as rows carried into the item's open period, or waiting for one. Rows with a
# `carried` value (others null) take it out of the period it came from and add it to the period
# whose invoice bills it (the one holding its timestamp), so a period's quantity is what its invoice
# bills.
# Rows with `recent_count` set are the usage of an item's meter in buckets starting at or after
# `w` (its trailing window, pricing.trailing_start): at most 24 buckets per combination, read on
# the bucket key (tenant, customer, meter, item, bucket_start), for the run-rate projection.
# Optimisation: JSON, not five arrays: asyncpg's check of every element of an array parameter is
# slow (docs/performance.md).
ITEM_SNAPSHOT = f"""
SELECT NULL::int AS request, NULL::text AS item, NULL::text AS meter, c.stream, c.last_id,
    NULL::bigint AS event_count, NULL::numeric AS value_sum, NULL::numeric AS value_max,
    NULL::bigint AS unique_count, NULL::numeric AS last_value, NULL::timestamptz AS last_at,
    NULL::text AS last_event_id, NULL::numeric AS carried, NULL::bytea AS folded,
    NULL::bigint AS recent_count, NULL::numeric AS recent_sum
FROM stream_checkpoints c WHERE c.stream = ANY($1::text[])
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, k.key, NULL,
    NULL
FROM usage_event_keys k WHERE k.key = ANY($3::bytea[])
UNION ALL
SELECT q.n, q.i, r.meter, NULL, NULL, r.event_count, r.value_sum, r.value_max,
    r.unique_count, r.last_value, r.last_at, r.last_event_id, NULL, NULL, NULL, NULL
FROM json_to_recordset($2::json)
    AS q(n int, t text, c text, i text, p bigint, e bigint, m text, w bigint)
CROSS JOIN LATERAL (
    SELECT * FROM usage_totals u
    WHERE u.tenant = q.t AND u.customer = q.c AND u.subscription_item = q.i
        AND u.period_start = to_timestamp(q.p)
    OFFSET 0
) r
UNION ALL
SELECT q.n, q.i, o.meter, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, -o.value, NULL,
    NULL, NULL
FROM json_to_recordset($2::json)
    AS q(n int, t text, c text, i text, p bigint, e bigint, m text, w bigint)
CROSS JOIN LATERAL (
    SELECT meter, value FROM report_outbox
    WHERE tenant = q.t AND customer = q.c AND subscription_item = q.i
        AND {_carried_out_of("to_timestamp(q.p)")}
    OFFSET 0
) o
UNION ALL
SELECT q.n, q.i, o.meter, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, o.value, NULL,
    NULL, NULL
FROM json_to_recordset($2::json)
    AS q(n int, t text, c text, i text, p bigint, e bigint, m text, w bigint)
CROSS JOIN LATERAL (
    SELECT meter, value FROM report_outbox
    WHERE tenant = q.t AND customer = q.c AND subscription_item = q.i
        AND {_carried_into("to_timestamp(q.p)", "to_timestamp(q.e)")}
    OFFSET 0
) o
UNION ALL
SELECT q.n, q.i, q.m, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    b.recent_count, b.recent_sum
FROM json_to_recordset($2::json)
    AS q(n int, t text, c text, i text, p bigint, e bigint, m text, w bigint)
CROSS JOIN LATERAL (
    SELECT sum(r.event_count)::bigint AS recent_count, sum(r.value_sum) AS recent_sum
    FROM usage_rollups r
    WHERE q.m IS NOT NULL AND q.w IS NOT NULL
        AND r.tenant = q.t AND r.customer = q.c AND r.meter = q.m AND r.subscription_item = q.i
        AND r.bucket_start >= to_timestamp(q.w) AND r.period_start = to_timestamp(q.p)
) b
WHERE b.recent_count IS NOT NULL
"""
# The connection that runs ITEM_SNAPSHOT runs nothing else, with these settings. Why: it keeps the
# plan it made first, and made while usage_totals was small (a new deployment), that plan reads the
# whole table once per element; until an ANALYZE replans it, each batch then takes seconds
# (docs/performance.md). With sequential scans off, each element is a primary-key lookup whatever
# the statistics; JIT off because a disabled scan's nominal cost would otherwise make the planner
# compile (as the aggregator's probe, aggregator/queries.py INDEX_PROBE).
SNAPSHOT_SETTINGS = {"enable_seqscan": "off", "jit": "off"}
# Every aggregation's state folded over buckets, so that pending events can be folded on top
# (see tally.py); `last` by (event time, event id), ids in the C collation as the aggregator
# compares them.
_FOLD = """
    sum(r.event_count)::bigint AS event_count, sum(r.value_sum) AS value_sum,
    max(r.value_max) AS value_max, sum(r.unique_count)::bigint AS unique_count,
    (array_agg(r.last_value ORDER BY r.last_at DESC, r.last_event_id COLLATE "C" DESC))[1]
        AS last_value,
    max(r.last_at) AS last_at,
    (array_agg(r.last_event_id ORDER BY r.last_at DESC, r.last_event_id COLLATE "C" DESC))[1]
        AS last_event_id
"""
# The distinct values of a unique_count meter over several (item, period start) sets of one
# customer ($4, $5: items and unix seconds): Stripe bills each item's line with the customer's
# one value, the union (meter/usage/api.py _distinct_unions).
UNION_DISTINCT = """
SELECT count(DISTINCT u.value) FROM usage_unique_values u
JOIN unnest($4::text[], $5::bigint[]) AS q(i, p)
  ON u.subscription_item = q.i AND u.period_start = to_timestamp(q.p)
WHERE u.tenant = $1 AND u.customer = ANY($2::text[]) AND u.meter = $3
"""
# A customer without a subscription: every bucket in [$3, $4), per meter.
USAGE_BY_METER = f"""
SELECT r.meter, coalesce(d.aggregation, f.aggregation, 'sum') AS aggregation, {_FOLD}
FROM usage_rollups r
LEFT JOIN meter_definitions d ON d.tenant = r.tenant AND d.meter = r.meter
LEFT JOIN stripe_meter_formulas f ON f.meter = r.meter
WHERE r.tenant = $1 AND r.customer = ANY($2::text[])
    AND r.bucket_start >= $3 AND r.bucket_start < $4
GROUP BY r.meter, d.aggregation, f.aggregation
ORDER BY r.meter
"""
# Every meter with a known aggregation for tenant $1: its local definitions, and the Stripe
# meters' formulas (account-wide) where it has none.
AGGREGATIONS_OF = """
SELECT meter, aggregation FROM meter_definitions WHERE tenant = $1
UNION ALL
SELECT f.meter, f.aggregation FROM stripe_meter_formulas f
WHERE f.aggregation IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM meter_definitions d WHERE d.tenant = $1 AND d.meter = f.meter)
"""

# One page of the history: buckets grouped per meter and hour/day ($5: 'hour' or 'day', in UTC),
# after the cursor ($7, $8: meter and bucket start of the last row sent), in (meter, time) order.
HISTORY = """
SELECT meter, aggregation, date_trunc($5, bucket_start, 'UTC') AS at,
    sum(value) AS value_sum, max(value) AS value_max,
    (array_agg(value ORDER BY last_at DESC, last_event_id DESC))[1] AS value_last,
    sum(event_count)::bigint AS events
FROM usage_rollup_values
WHERE tenant = $1 AND customer = ANY($2::text[]) AND bucket_start >= $3 AND bucket_start < $4
    AND ($6::text IS NULL OR meter = $6)
    AND ($7::text IS NULL OR meter > $7 OR (meter = $7 AND bucket_start >= $8))
GROUP BY meter, aggregation, at
ORDER BY meter, at
LIMIT $9
"""
# The same history per combination of dimension values ($10..$12: the `group_by` keys, null
# when fewer; meter_dimension_value, migrations/0018_dimensions.sql) and only buckets whose
# values match the filters ($13 keys, $14 values). A page is $9 whole (meter, time) slots with
# every group of each, so that a cursor never splits a slot's groups.
HISTORY_GROUPED = """
WITH f AS (
    SELECT meter, aggregation, date_trunc($5, bucket_start, 'UTC') AS at, value, last_at,
        last_event_id, event_count,
        meter_dimension_value(dims, $10) AS g1, meter_dimension_value(dims, $11) AS g2,
        meter_dimension_value(dims, $12) AS g3
    FROM usage_rollup_values
    WHERE tenant = $1 AND customer = ANY($2::text[]) AND bucket_start >= $3 AND bucket_start < $4
        AND ($6::text IS NULL OR meter = $6)
        AND ($7::text IS NULL OR meter > $7 OR (meter = $7 AND bucket_start >= $8))
        AND NOT EXISTS (
            SELECT 1 FROM unnest($13::text[], $14::text[]) AS q(k, v)
            WHERE meter_dimension_value(dims, q.k) <> q.v
        )
), slots AS (
    SELECT DISTINCT meter, at FROM f ORDER BY meter, at LIMIT $9
)
SELECT f.meter, f.aggregation, f.at, f.g1, f.g2, f.g3,
    sum(f.value) AS value_sum, max(f.value) AS value_max,
    (array_agg(f.value ORDER BY f.last_at DESC, f.last_event_id DESC))[1] AS value_last,
    sum(f.event_count)::bigint AS events
FROM f JOIN slots s ON s.meter = f.meter AND s.at = f.at
GROUP BY f.meter, f.aggregation, f.at, f.g1, f.g2, f.g3
ORDER BY f.meter, f.at, f.g1, f.g2, f.g3
"""

# One item's usage per combination of dimension values (docs/dimensions.md): every bucket of the
# customer's meter $3 in [$4, $5), grouped by the `group_by` keys ($6..$8, null when fewer) and
# only buckets matching the filters ($9 keys, $10 values). Each aggregation's state per group.
GROUPS_IN_WINDOW = f"""
SELECT meter_dimension_value(r.dims, $6) AS g1, meter_dimension_value(r.dims, $7) AS g2,
    meter_dimension_value(r.dims, $8) AS g3, {_FOLD}
FROM usage_rollups r
WHERE r.tenant = $1 AND r.customer = ANY($2::text[]) AND r.meter = $3
    AND r.bucket_start >= $4 AND r.bucket_start < $5
    AND NOT EXISTS (
        SELECT 1 FROM unnest($9::text[], $10::text[]) AS q(k, v)
        WHERE meter_dimension_value(r.dims, q.k) <> q.v
    )
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""
# The tenant's dimension versions (meter/dimensions.py index_versions), for pending events.
DIMENSION_VERSIONS = """
SELECT tenant, meter, effective_from, keys FROM meter_dimensions WHERE tenant = $1
"""

# Pricing per dimension: a meter's usage in [$4, $5) per combination (and since $6: recent), so
# that each combination's part goes to the item of the price it is mapped to (meter/usage/api.py,
# docs/dimensions.md).
BY_COMBINATION_IN_WINDOW = f"""
SELECT r.dims, {_FOLD},
    coalesce(sum(r.event_count) FILTER (WHERE r.bucket_start >= $6), 0)::bigint AS recent_count,
    coalesce(sum(r.value_sum) FILTER (WHERE r.bucket_start >= $6), 0) AS recent_sum
FROM usage_rollups r
WHERE r.tenant = $1 AND r.customer = ANY($2::text[]) AND r.meter = $3
    AND r.bucket_start >= $4 AND r.bucket_start < $5
GROUP BY r.dims
"""
# Usage the reporter carried into an item's period (+) or out of it (−), per Stripe event name,
# as ITEM_SNAPSHOT counts it per meter: a mapped meter's carried rows are billed by the item of
# the price their event name feeds (docs/dimensions.md).
CARRIED_BY_EVENT_NAME = f"""
SELECT event_name, sum(v) AS carried FROM (
    SELECT event_name, -value AS v FROM report_outbox
    WHERE tenant = $1 AND customer = ANY($2::text[]) AND subscription_item = $3
        AND {_carried_out_of("$4")}
    UNION ALL
    SELECT event_name, value FROM report_outbox
    WHERE tenant = $1 AND customer = ANY($2::text[]) AND subscription_item = $3
        AND {_carried_into("$4", "$5")}
) c
GROUP BY event_name
"""
# The tenant's price mappings (migrations/0018_dimensions.sql).
PRICE_MAPPINGS = """
SELECT meter, filter::text AS filter, event_name FROM meter_price_mappings WHERE tenant = $1
"""
