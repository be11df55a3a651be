"""Every SQL statement of the reporter, named. Schema: migrations/0004_reporter.sql (and
0011, 0013, 0018, 0019)."""

from __future__ import annotations

# One outbox builder at a time (a crash releases it with its transaction).
BUILD_LOCK_KEY = 0x6D657465725F7270  # "meter_rp"

LOCK_BUILD = "SELECT pg_advisory_xact_lock($1)"

# Only attributed buckets are reported (subscription_item IS NOT NULL). Re-attribution deletes
# unattributed buckets and folds their events again into item buckets; had an unattributed bucket
# been reported, its usage would reach Stripe twice. Attributed buckets are never moved or
# deleted, so their versions only grow: a version above the mark is new usage, exactly.
# Delta meters (sum, count): one unit per bucket, paged by rollup id.
GROWN_BUCKETS = """
SELECT v.id, v.tenant, v.customer, v.meter, v.subscription_item, v.period_start,
       v.bucket_start, v.version, v.value, m.version AS mark_version, m.value AS mark_value,
       m.event_time AS mark_event_time, v.dims
FROM usage_rollup_values v
LEFT JOIN report_marks m
  ON m.tenant = v.tenant AND m.customer = v.customer AND m.meter = v.meter
 AND m.subscription_item = v.subscription_item AND m.unit = 'bucket'
 AND m.unit_start = v.bucket_start AND m.dims = v.dims
WHERE v.subscription_item IS NOT NULL
  AND v.aggregation IN ('sum', 'count')
  AND (m.version IS NULL OR v.version > m.version)
  AND v.id > $1
ORDER BY v.id
LIMIT $2
"""

# Absolute meters (last, max, unique_count): one unit per customer, meter and billing period
# start over every item billing it. A Stripe meter event names a customer, never an item, and
# Stripe's `last` keeps one value per customer and meter, so the value sent is the union of all
# the items' buckets of the period: the latest, the greatest, or the distinct values of all of
# them (not a sum of per-item counts). The sum of the bucket versions grows with every fold into
# any of them (attributed buckets are never removed). The unit's mark has item '' (a customer's
# unit, not an item's); `subscription_item` is one of its items (the least id), whose period the
# outbox row follows; `items` are all of them, `meter_items` every item of the customer's meter,
# whose windows the build checks for overlaps (outbox.py). Attributed buckets only, as above.
GROWN_PERIODS = """
WITH periods AS (
    SELECT tenant, customer, meter, period_start,
           min(subscription_item) AS subscription_item,
           array_agg(DISTINCT subscription_item) AS items,
           sum(version)::bigint AS version,
           min(aggregation) AS aggregation,
           max(value_max) AS value_max,
           (array_agg(last_value ORDER BY last_at DESC, last_event_id DESC))[1] AS last_value,
           max(last_at) AS last_at
    FROM usage_rollup_values
    WHERE subscription_item IS NOT NULL
      AND aggregation IN ('last', 'max', 'unique_count')
    GROUP BY tenant, customer, meter, period_start
), meters AS (
    SELECT p.tenant, p.customer, p.meter, array_agg(DISTINCT i) AS meter_items
    FROM periods p CROSS JOIN LATERAL unnest(p.items) AS i
    GROUP BY p.tenant, p.customer, p.meter
)
SELECT p.tenant, p.customer, p.meter, p.subscription_item, p.items, x.meter_items,
       p.period_start, p.version, p.last_at,
       CASE p.aggregation
           WHEN 'max' THEN p.value_max
           WHEN 'unique_count' THEN (
               SELECT count(DISTINCT u.value) FROM usage_unique_values u
               WHERE u.tenant = p.tenant AND u.customer = p.customer AND u.meter = p.meter
                 AND u.subscription_item = ANY(p.items) AND u.period_start = p.period_start
           )::numeric
           ELSE p.last_value
       END AS value,
       m.version AS mark_version, m.value AS mark_value, m.event_time AS mark_event_time
FROM periods p
JOIN meters x ON x.tenant = p.tenant AND x.customer = p.customer AND x.meter = p.meter
LEFT JOIN report_marks m
  ON m.tenant = p.tenant AND m.customer = p.customer AND m.meter = p.meter
 AND m.subscription_item = '' AND m.unit = 'period' AND m.unit_start = p.period_start
 AND m.dims = ''
WHERE m.version IS NULL OR p.version > m.version
"""

# Every billing period of these subscription items (billing's tables), the event name its price
# bills ('' for a price on no meter, a licensed one; NULL: not known yet), whether the item was
# deleted, and whether an invoice of the item's subscription covering it is no longer a draft. A
# cycle invoice's period is the one it bills; a window that a price change or the item's deletion
# ended early lies inside it (a final invoice closes it too); an invoice of a mid-period change
# starts later and does not close the earlier window. A window that a price change or the item's
# deletion ended in a flexible-mode subscription is invoiced at that moment: Stripe billed the
# usage reported up to then as an invoice item of fixed amount and bills no more of that window
# (docs.stripe.com/billing/subscriptions/usage-based/manage-billing-setup), so usage of it not
# sent yet is carried into the item's open period on its meter, or recorded as billed by
# nothing, rather than sent where nothing bills it (reporter/periods.py). With the
# subscription's trial (directory.py tells the trial periods), and whether an invoice covering
# the window was voided (a paused collection's `void`, or by hand): no later usage of it is
# charged. With the subscription's Stripe customer and whether it was deleted (its usage belongs
# to it, never to a customer that later took over our external id).
ITEM_BILLING_PERIODS = """
SELECT p.item, p.period_start, p.period_end, s.trial_start, s.trial_end,
       CASE WHEN p.meter IS NULL AND p.price IS NOT NULL THEN '' ELSE m.event_name END
           AS event_name,
       i.removed_at IS NOT NULL AS removed,
       s.customer AS stripe_customer, coalesce(c.deleted, false) AS customer_deleted,
       EXISTS (
           SELECT 1 FROM invoices v
           WHERE v.subscription = i.subscription AND v.status = 'void'
             AND v.period_start <= p.period_start AND v.period_end >= p.period_end
       ) AS voided,
       EXISTS (
           SELECT 1 FROM invoices v
           WHERE v.subscription = i.subscription AND v.status <> 'draft'
             AND v.period_start <= p.period_start AND v.period_end >= p.period_end
       ) OR (
           s.billing_mode = 'flexible' AND p.price IS NOT NULL AND EXISTS (
               SELECT 1 FROM subscription_item_periods n
               WHERE n.item = p.item AND n.period_start = p.period_end
                 AND n.price IS DISTINCT FROM p.price
           )
       ) OR (
           s.billing_mode = 'flexible' AND p.price IS NOT NULL AND i.removed_at IS NOT NULL
           AND p.period_end <= i.removed_at
       ) AS invoiced
FROM subscription_item_periods p
LEFT JOIN subscription_items i ON i.id = p.item
LEFT JOIN subscriptions s ON s.id = i.subscription
LEFT JOIN billing_meters m ON m.id = p.meter
LEFT JOIN customers c ON c.stripe_id = s.customer
WHERE p.item = ANY($1::text[])
ORDER BY p.item, p.period_start
"""

UPSERT_MARKS = """
INSERT INTO report_marks
    (tenant, customer, meter, subscription_item, unit, unit_start, version, value, event_time,
     dims)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::bigint[], $8::numeric[], $9::timestamptz[],
                     $10::text[])
ON CONFLICT (tenant, customer, meter, subscription_item, unit, unit_start, dims) DO UPDATE
SET version = excluded.version, value = excluded.value, event_time = excluded.event_time,
    updated_at = now()
WHERE report_marks.version < excluded.version
"""

INSERT_OUTBOX = """
INSERT INTO report_outbox
    (identifier, tenant, customer, meter, subscription_item, period_start, stripe_customer,
     event_name, value, absolute, event_time, carried_from, status, last_error)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::text[], $8::text[], $9::numeric[], $10::bool[],
                     $11::timestamptz[], $12::timestamptz[], $13::text[], $14::text[])
ON CONFLICT (identifier) DO NOTHING
"""

WAITING_FOR_ATTRIBUTION = "SELECT count(*) FROM usage_rollups WHERE subscription_item IS NULL"

# Rows of a closed period waiting for an open period of their item (migrations/0011).
WAITING_ROWS = """
SELECT id, subscription_item, event_name FROM report_outbox WHERE status = 'waiting'
"""
WAITING_COUNT = "SELECT count(*) FROM report_outbox WHERE status = 'waiting'"
RELEASE_WAITING = """
UPDATE report_outbox SET status = 'pending', next_attempt_at = now()
WHERE id = ANY($1::bigint[]) AND status = 'waiting'
"""

# Pricing per dimension (migrations/0018_dimensions.sql): a combination's usage goes to the event
# name of the mapping its values match.
PRICE_MAPPINGS = (
    "SELECT tenant, meter, filter::text AS filter, event_name FROM meter_price_mappings"
)

# Usage is not sent to an event name whose Stripe meter has a `count` formula
# (migrations/0012_meter_formulas.sql) or is inactive: `stripe_meter_formulas.sendable`
# (migrations/0015_lifecycle.sql). It waits, unsent and counted, until the meter is sendable.
# Outbox rows (`o`) whose event name can be sent to now:
_SENDABLE_ROW = """NOT EXISTS (
    SELECT 1 FROM stripe_meter_formulas f WHERE f.meter = o.event_name AND NOT f.sendable)"""

# Meters ($1) whose usage waits (above), with whether it is for the formula (else: inactive).
UNREPORTABLE_METERS = """
SELECT f.meter, NOT f.reportable AS formula FROM stripe_meter_formulas f
WHERE NOT f.sendable AND f.meter = ANY($1::text[])
"""
# Pending outbox rows held back because their meter became unsendable after they were planned.
HELD_ROWS = (
    f"SELECT count(*) FROM report_outbox o WHERE o.status = 'pending' AND NOT {_SENDABLE_ROW}"
)

# Claim: the oldest due pending rows, locked by this transaction only; a row another reporter
# (or lane) holds is skipped, so no row is ever being sent by two senders at once.
# Rows of an unsendable meter are not claimed: sent, Stripe would accept them and drop them
# (an `archived_meter` error report); they wait, pending, and are claimed once it is sendable.
CLAIM = f"""
SELECT id, identifier, stripe_customer, event_name, value, absolute, event_time, attempts,
       created_at, subscription_item, period_start, carried_from
FROM report_outbox o
WHERE status = 'pending' AND next_attempt_at <= now() AND {_SENDABLE_ROW}
ORDER BY event_time, id
LIMIT $1
FOR UPDATE OF o SKIP LOCKED
"""

MARK_SENT = """
UPDATE report_outbox
SET status = 'sent', sent_at = now(), attempts = attempts + 1, last_error = NULL
WHERE id = ANY($1::bigint[])
"""

MARK_RETRY = """
UPDATE report_outbox
SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2),
    last_error = $3
WHERE id = ANY($1::bigint[])
"""

MARK_STATUS = """
UPDATE report_outbox SET status = $2, attempts = attempts + 1, last_error = $3
WHERE id = ANY($1::bigint[])
"""

# Sent rows of the same customer and event name in [start, end): what Stripe should hold there.
SENT_IN_WINDOW = """
SELECT value, absolute, event_time, id
FROM report_outbox
WHERE status = 'sent' AND stripe_customer = $1 AND event_name = $2
  AND event_time >= $3 AND event_time < $4
ORDER BY event_time, id
"""

# A claimed row whose period closed before it was sent, moved into its item's open period: same
# identifier and value, a timestamp there; the first original timestamp stays in carried_from.
MOVE_ROWS = """
UPDATE report_outbox o
SET event_time = m.event_time, carried_from = coalesce(o.carried_from, o.event_time)
FROM unnest($1::bigint[], $2::timestamptz[]) AS m(id, event_time)
WHERE o.id = m.id
"""
# A claimed row whose period closed and whose item has no open period yet: the build releases it.
PARK_ROWS = """
UPDATE report_outbox SET status = 'waiting', attempts = attempts + 1, last_error = $2
WHERE id = ANY($1::bigint[])
"""

# Pending rows of one window created after $5 (inside the dedupe horizon): tried or not, their
# identifiers are still deduplicated by Stripe (send.py, the horizon check).
FRESH_PENDING_IN_WINDOW = """
SELECT count(*) FROM report_outbox
WHERE status = 'pending' AND stripe_customer = $1 AND event_name = $2
  AND event_time >= $3 AND event_time < $4 AND created_at > $5
"""

# Held rows (HELD_ROWS) are counted as waiting for their meter, not as outbox depth.
OUTBOX_DEPTH = f"""
SELECT count(*) AS depth, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest_s
FROM report_outbox o WHERE status = 'pending' AND {_SENDABLE_ROW}
"""

# Reconciliation: every (customer, event name, billing period) we sent usage for, with the span
# of its sent timestamps (the window asked of Stripe) and our rows in it.
SENT_PERIODS = """
SELECT stripe_customer, event_name, period_start, bool_or(absolute) AS absolute,
       min(event_time) AS first_at, max(event_time) AS last_at
FROM report_outbox
WHERE status = 'sent' AND carried_from IS NULL AND event_time >= $1
GROUP BY stripe_customer, event_name, period_start
ORDER BY stripe_customer, event_name, period_start
"""

PENDING_COUNT = f"SELECT count(*) FROM report_outbox o WHERE status = 'pending' AND {_SENDABLE_ROW}"

# --- voids (`meter usage void`; schema: migrations/0005_voids.sql) ----------------------------
# Voids of one event wait for each other here, so a second one finds the first's row.
LOCK_VOID = "SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))"

VOIDED = "SELECT 1 FROM usage_voids WHERE tenant = $1 AND event_id = $2"

# No index on event_id: every day partition is searched (a rare, operator-run command).
# FOR UPDATE holds the row against a concurrent re-attribution until the void commits. The
# aggregation follows usage_rollup_values (migrations/0012_meter_formulas.sql).
FIND_EVENT = """
SELECT e.customer, e.meter, e.value, e.event_time, e.subscription_item, e.period_start, e.dims,
       coalesce(d.aggregation, f.aggregation, 'sum') AS aggregation
FROM usage_events e
LEFT JOIN meter_definitions d ON d.tenant = e.tenant AND d.meter = e.meter
LEFT JOIN stripe_meter_formulas f ON f.meter = e.meter
WHERE e.tenant = $1 AND e.event_id = $2
FOR UPDATE OF e
"""

INSERT_VOID = """
INSERT INTO usage_voids
    (tenant, event_id, customer, meter, value, event_time, subscription_item, bucket_start)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
