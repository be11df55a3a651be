"""Every SQL statement the aggregator runs, by name. Schema: migrations/0002_usage.sql."""

from __future__ import annotations

# --- batch staging --------------------------------------------------------------------------------
# Created once per connection; emptied by every commit and rollback (ON COMMIT DELETE ROWS).
# Times travel as unix milliseconds and the value as its decimal text (cheap to send; see
# flush._record); INSERT_NEW_EVENTS converts them exactly (ms × 1 ms interval, text → numeric).
CREATE_BATCH_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS aggregator_batch (
    tenant             text,
    event_id           text,
    customer           text,
    meter              text,
    value              text,
    event_ms           bigint,
    received_ms        bigint,
    properties         text,
    subscription_item  text,
    period_start_ms    bigint,
    stream_id          text
) ON COMMIT DELETE ROWS
"""
BATCH_TABLE = "aggregator_batch"
# Optimisation: planner statistics for the batch table, once per connection (ANALYZE costs
# ~12 ms, too much per batch). Without them Postgres guesses ~100 rows out of the
# INSERT … RETURNING and joins it back to the batch with two extra sorts (a merge join); with a
# batch-sized sample of distinct ids it picks a hash join (~25 % less time for the statement).
# The sample rows vanish at commit (ON COMMIT DELETE ROWS); the statistics stay.
PRIME_BATCH_TABLE = """
INSERT INTO aggregator_batch (tenant, event_id)
SELECT 'tenant', 'id' || i FROM generate_series(1, 5000) AS i;
ANALYZE aggregator_batch;
"""
BATCH_COLUMNS = (
    "tenant",
    "event_id",
    "customer",
    "meter",
    "value",
    "event_ms",
    "received_ms",
    "properties",
    "subscription_item",
    "period_start_ms",
    "stream_id",
)

# Postgres is the durable dedupe: only ids new to usage_event_ids reach the raw log, and only the
# rows this statement inserted come back, so only they are folded.
INSERT_NEW_EVENTS = """
WITH fresh AS (
    INSERT INTO usage_event_ids (tenant, event_id)
    SELECT tenant, event_id FROM aggregator_batch ORDER BY tenant, event_id
    ON CONFLICT DO NOTHING
    RETURNING tenant, event_id
)
INSERT INTO usage_events (
    tenant, event_id, customer, meter, value, event_time, received_at, properties,
    subscription_item, period_start, stream_id
)
SELECT b.tenant, b.event_id, b.customer, b.meter, b.value::numeric,
       timestamptz 'epoch' + b.event_ms * interval '1 millisecond',
       timestamptz 'epoch' + b.received_ms * interval '1 millisecond',
       b.properties::jsonb, b.subscription_item,
       timestamptz 'epoch' + b.period_start_ms * interval '1 millisecond',
       b.stream_id
FROM aggregator_batch b
JOIN fresh f ON f.tenant = b.tenant AND f.event_id = b.event_id
RETURNING tenant, event_id
"""

# The same dedupe with the raw log off (METER_RAW_LOG=0): usage_event_ids alone decides which
# events are new, exactly as above; only the write to usage_events is skipped. $1/$2: the
# batch's tenants and event ids (no repeats: the batch is deduplicated first).
INSERT_NEW_IDS = """
INSERT INTO usage_event_ids (tenant, event_id)
SELECT * FROM unnest($1::text[], $2::text[]) AS b(tenant, event_id) ORDER BY tenant, event_id
ON CONFLICT DO NOTHING
RETURNING tenant, event_id
"""

# --- rollups ----------------------------------------------------------------------------------
# How a stored aggregation state (alias `s`) absorbs the state of new events (`excluded`): the SQL
# form of fold.Rollup.merge, shared by buckets and period totals. "last" compares ids with the C
# collation: code-point order, the same order Python's str comparison uses in the pure fold.
_MERGE_STATE = """
    event_count = s.event_count + excluded.event_count,
    value_sum = s.value_sum + excluded.value_sum,
    value_max = greatest(s.value_max, excluded.value_max),
    last_value = CASE
        WHEN (excluded.last_at, excluded.last_event_id COLLATE "C")
             > (s.last_at, s.last_event_id COLLATE "C")
        THEN excluded.last_value ELSE s.last_value END,
    last_event_id = CASE
        WHEN (excluded.last_at, excluded.last_event_id COLLATE "C")
             > (s.last_at, s.last_event_id COLLATE "C")
        THEN excluded.last_event_id ELSE s.last_event_id END,
    last_at = greatest(s.last_at, excluded.last_at),
    unique_count = s.unique_count + excluded.unique_count"""

# Rows arrive sorted (fold.sorted_buckets) and unnest keeps array order, so every writer locks
# buckets in the same order.
UPSERT_BUCKETS = f"""
INSERT INTO usage_rollups AS s (
    tenant, customer, meter, subscription_item, period_start, bucket_start, bucket_end,
    event_count, value_sum, value_max, last_value, last_at, last_event_id, unique_count
)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[],
    $7::timestamptz[], $8::bigint[], $9::numeric[], $10::numeric[], $11::numeric[],
    $12::timestamptz[], $13::text[], $14::bigint[]
)
ON CONFLICT (tenant, customer, meter, subscription_item, bucket_start) DO UPDATE SET
    {_MERGE_STATE},
    version = s.version + 1,
    updated_at = now()
"""

# The deltas of one fold per (item, period, meter), merged as the buckets are (rows come sorted
# by fold.period_totals, after the buckets: one lock order for every writer).
UPSERT_TOTALS = f"""
INSERT INTO usage_totals AS s (
    tenant, customer, meter, subscription_item, period_start, event_count, value_sum, value_max,
    last_value, last_at, last_event_id, unique_count
)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::bigint[],
    $7::numeric[], $8::numeric[], $9::numeric[], $10::timestamptz[], $11::text[], $12::bigint[]
)
ON CONFLICT (tenant, customer, subscription_item, period_start, meter) DO UPDATE SET
    {_MERGE_STATE}
"""

# Values new to their set come back; each is credited to its bucket.
INSERT_UNIQUE_VALUES = """
INSERT INTO usage_unique_values (
    tenant, customer, meter, subscription_item, period_start, value, bucket_start
)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
    $7::timestamptz[]
)
ON CONFLICT DO NOTHING
RETURNING tenant, customer, meter, subscription_item, period_start, value
"""

UNIQUE_COUNT_METERS = """
SELECT tenant, meter, unique_property FROM meter_definitions WHERE aggregation = 'unique_count'
"""

# --- checkpoints ------------------------------------------------------------------------------
ENSURE_CHECKPOINT = "INSERT INTO stream_checkpoints (stream) VALUES ($1) ON CONFLICT DO NOTHING"
GET_CHECKPOINT = "SELECT last_id FROM stream_checkpoints WHERE stream = $1"
# Compare-and-set: succeeds only if nobody advanced the checkpoint since we read it. It also
# row-locks the checkpoint, so two workers on one shard serialize here (see flush.py, step 2).
ADVANCE_CHECKPOINT = """
UPDATE stream_checkpoints SET last_id = $3, updated_at = now() WHERE stream = $1 AND last_id = $2
"""

# --- locks ------------------------------------------------------------------------------------
# Flushes hold the re-attribution lock shared; re-attribution holds it exclusively.
LOCK_FOLD_SHARED = "SELECT pg_advisory_xact_lock_shared($1)"
LOCK_FOLD_EXCLUSIVE = "SELECT pg_advisory_xact_lock($1)"
TRY_LOCK = "SELECT pg_try_advisory_lock($1, $2)"
UNLOCK = "SELECT pg_advisory_unlock($1, $2)"
# Session advisory locks in this database under one class id (the two-int4 form: objsubid 2).
COUNT_LOCKS = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid = $1::bigint::oid
"""
PING = "SELECT 1"

# --- raw partitions ---------------------------------------------------------------------------
ENSURE_PARTITION = "SELECT meter_ensure_usage_partition($1::date)"
DROP_PARTITIONS_BEFORE = "SELECT * FROM meter_drop_usage_partitions_before($1::date)"

# --- re-attribution ---------------------------------------------------------------------------
UNATTRIBUTED_CUSTOMERS = """
SELECT DISTINCT tenant, customer FROM usage_rollups
WHERE subscription_item IS NULL AND bucket_start >= $1
ORDER BY tenant, customer
"""
UNATTRIBUTED_EVENTS = """
SELECT event_id, customer, meter, value::text AS value, event_time, received_at,
       properties::text AS properties
FROM usage_events
WHERE tenant = $1 AND customer = $2 AND subscription_item IS NULL AND event_time >= $3
ORDER BY event_time, event_id
"""
SET_ATTRIBUTION = """
UPDATE usage_events e SET subscription_item = u.item, period_start = u.period_start
FROM unnest($3::text[], $4::timestamptz[], $5::text[], $6::timestamptz[])
    AS u(event_id, event_time, item, period_start)
WHERE e.tenant = $1 AND e.customer = $2 AND e.event_id = u.event_id
  AND e.event_time = u.event_time AND e.subscription_item IS NULL
"""
DELETE_UNATTRIBUTED_BUCKETS = """
DELETE FROM usage_rollups
WHERE tenant = $1 AND customer = $2 AND subscription_item IS NULL AND bucket_start >= $3
"""
DELETE_UNATTRIBUTED_VALUES = """
DELETE FROM usage_unique_values
WHERE tenant = $1 AND customer = $2 AND subscription_item IS NULL AND bucket_start >= $3
"""
