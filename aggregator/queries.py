"""Every SQL statement the aggregator runs, by name. Schema: migrations/0002_usage.sql."""

from __future__ import annotations

# --- batch staging --------------------------------------------------------------------------------
# Created once per connection; emptied by every commit and rollback (ON COMMIT DELETE ROWS).
# Times travel as unix milliseconds and the value as its decimal text (cheap to send; see
# flush._record); INSERT_NEW_EVENTS converts them exactly (ms × 1 ms interval, text → numeric).
# `key` is the event's dedupe key (meter.events.event_key).
CREATE_BATCH_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS aggregator_batch (
    key                bytea,
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
    stream_id          text,
    dims               text
) ON COMMIT DELETE ROWS
"""
BATCH_TABLE = "aggregator_batch"
# Optimisation: planner statistics for the batch table, once per connection (ANALYZE is too slow per
# batch: docs/performance.md). Without them Postgres guesses the batch's size from its (empty) pages
# and may plan the dedupe probe below for a handful of rows; with a batch-sized sample it plans it
# for thousands. The sample rows vanish at commit (ON COMMIT DELETE ROWS); the statistics stay.
PRIME_BATCH_TABLE = """
INSERT INTO aggregator_batch (key, tenant, event_id)
SELECT sha256(i::text::bytea), 'tenant', 'id' || i FROM generate_series(1, 5000) AS i;
ANALYZE aggregator_batch;
"""
BATCH_COLUMNS = (
    "key",
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
    "dims",
)

# Run around either probe (flush step 6). A connection plans a statement when it first runs and
# keeps that plan until something invalidates it (an ANALYZE of a table it reads, a schema change);
# INSERT_NEW_EVENTS has no parameters, so no per-call re-planning either. Planned while
# usage_event_keys was small, a sequential scan of the keys per batch row looks cheapest, and the
# plan can stay as the table grows, and then takes minutes instead of milliseconds
# (docs/performance.md). With sequential scans disabled the only plan left is an index lookup per
# row. JIT goes off too: the disabled scan of the batch table itself (it has no index, and needs
# none) carries a huge nominal cost that would otherwise make Postgres JIT-compile the probe
# (docs/performance.md). RESET afterwards returns both to the connection's defaults for the rest of
# the transaction (the flush connection never sets them otherwise); an error in between rolls the
# SET LOCAL back with the transaction.
INDEX_PROBE = "SET LOCAL enable_seqscan = off; SET LOCAL jit = off"
END_INDEX_PROBE = "RESET enable_seqscan; RESET jit"

# Postgres is the durable dedupe: an event is new if its key is not in usage_event_keys. One
# statement probes every key of the batch once (an index lookup each), records the new keys, writes
# the new events to the raw log and returns the ones already seen: the duplicates, which are usually
# none, so almost nothing comes back.
# Optimisation: a probe then a plain INSERT, not INSERT … ON CONFLICT DO NOTHING RETURNING; the
# speculative insertion of ON CONFLICT and returning every new id cost more per event
# (docs/performance.md). Still exactly-once: a shard's batches run one at a time (the checkpoint CAS
# of flush step 4 row-locks the shard), and an id always maps to the same shard, so no concurrent
# transaction inserts the same key; if one ever did (METER_SHARDS changed with entries still in the
# streams), the primary key makes the later INSERT fail, its whole transaction rolls back, and the
# retried batch finds the key with this probe. All CTEs see one snapshot, so the final SELECT sees
# `seen` as the probe computed it.
# The probe is a LATERAL subquery with LIMIT 1, not EXISTS: Postgres may plan an uncorrelated EXISTS
# as a hashed SubPlan that reads the whole of usage_event_keys (seen at ~100k keys). The lateral
# form still leaves Postgres a choice, so it runs under INDEX_PROBE (above). New keys go in key
# order so that two transactions that ever do meet (see above) lock the index in the same order: one
# waits for the other rather than deadlocking.
INSERT_NEW_EVENTS = """
WITH probe AS MATERIALIZED (
    SELECT b.*, k.hit IS NOT NULL AS seen
    FROM aggregator_batch b
    LEFT JOIN LATERAL (
        SELECT true AS hit FROM usage_event_keys k WHERE k.key = b.key LIMIT 1
    ) k ON true
), new_keys AS (
    INSERT INTO usage_event_keys (key) SELECT key FROM probe WHERE NOT seen ORDER BY key
), raw AS (
    INSERT INTO usage_events (
        tenant, event_id, customer, meter, value, event_time, received_at, properties,
        subscription_item, period_start, stream_id, dims
    )
    SELECT b.tenant, b.event_id, b.customer, b.meter, b.value::numeric,
           timestamptz 'epoch' + b.event_ms * interval '1 millisecond',
           timestamptz 'epoch' + b.received_ms * interval '1 millisecond',
           b.properties::jsonb, b.subscription_item,
           timestamptz 'epoch' + b.period_start_ms * interval '1 millisecond',
           b.stream_id, nullif(b.dims, '')
    FROM probe b WHERE NOT seen
)
SELECT tenant, event_id FROM probe WHERE seen
"""

# The same dedupe with the raw log off (METER_RAW_LOG=0): usage_event_keys alone decides which
# events are new, exactly as above; only the write to usage_events is skipped. $1/$2/$3: the
# batch's keys, tenants and event ids (no repeats: the batch is deduplicated first).
INSERT_NEW_IDS = """
WITH probe AS MATERIALIZED (
    SELECT b.*, k.hit IS NOT NULL AS seen
    FROM unnest($1::bytea[], $2::text[], $3::text[]) AS b(key, tenant, event_id)
    LEFT JOIN LATERAL (
        SELECT true AS hit FROM usage_event_keys k WHERE k.key = b.key LIMIT 1
    ) k ON true
), new_keys AS (
    INSERT INTO usage_event_keys (key) SELECT key FROM probe WHERE NOT seen ORDER BY key
)
SELECT tenant, event_id FROM probe WHERE seen
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


# Optimisation: the upserts take times as unix ms and decimals as text, converted here, as the batch
# staging does (flush._record): asyncpg binary-encoding a Decimal and a datetime per value was
# costly when many buckets are touched (docs/performance.md). Both are exact.
def _ts(ms: str) -> str:
    return f"timestamptz 'epoch' + {ms} * interval '1 millisecond'"


# The aggregation state columns of an upsert's input `u`, converted: count, sum, max, last value,
# last time, last id, unique count (store._state_columns sends them in this order).
_STATE_VALUES = f"""u.event_count, u.value_sum::numeric, u.value_max::numeric,
    u.last_value::numeric, {_ts("u.last_ms")}, u.last_event_id, u.unique_count"""
_STATE_INPUT = """event_count, value_sum, value_max, last_value, last_ms, last_event_id,
    unique_count"""

# Rows arrive sorted (fold.sorted_buckets) and unnest keeps array order, so every writer locks
# buckets in the same order.
UPSERT_BUCKETS = f"""
INSERT INTO usage_rollups AS s (
    tenant, customer, meter, subscription_item, period_start, bucket_start, bucket_end,
    event_count, value_sum, value_max, last_value, last_at, last_event_id, unique_count, dims
)
SELECT u.tenant, u.customer, u.meter, u.item, {_ts("u.period_ms")}, {_ts("u.start_ms")},
    {_ts("u.end_ms")}, {_STATE_VALUES}, u.dims
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
    $8::bigint[], $9::text[], $10::text[], $11::text[], $12::bigint[], $13::text[], $14::bigint[],
    $15::text[]
) AS u(tenant, customer, meter, item, period_ms, start_ms, end_ms, {_STATE_INPUT}, dims)
ON CONFLICT (tenant, customer, meter, subscription_item, bucket_start, dims) DO UPDATE SET
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
SELECT u.tenant, u.customer, u.meter, u.item, {_ts("u.period_ms")}, {_STATE_VALUES}
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[],
    $8::text[], $9::text[], $10::bigint[], $11::text[], $12::bigint[]
) AS u(tenant, customer, meter, item, period_ms, {_STATE_INPUT})
ON CONFLICT (tenant, customer, subscription_item, period_start, meter) DO UPDATE SET
    {_MERGE_STATE}
"""

# The running totals folded from the buckets in one pass, column for column as usage_totals:
# what UPSERT_TOTALS keeps up incrementally. (migrations/0007_usage_totals.sql backfilled with
# this statement and keeps its copy, as applied.) The tests' drift check and bench-usage's loader
# use it from here.
_TOTALS_SELECT = """
SELECT tenant, customer, subscription_item, period_start, meter,
    sum(event_count) AS event_count, sum(value_sum) AS value_sum, max(value_max) AS value_max,
    (array_agg(last_value ORDER BY last_at DESC, last_event_id COLLATE "C" DESC))[1]
        AS last_value,
    max(last_at) AS last_at,
    (array_agg(last_event_id ORDER BY last_at DESC, last_event_id COLLATE "C" DESC))[1]
        AS last_event_id,
    sum(unique_count) AS unique_count
FROM usage_rollups"""
_TOTALS_GROUP = "GROUP BY tenant, customer, subscription_item, period_start, meter\n"
TOTALS_FROM_BUCKETS = f"""{_TOTALS_SELECT} WHERE subscription_item IS NOT NULL
{_TOTALS_GROUP}"""

# Values new to their set come back; each is credited to its bucket.
INSERT_UNIQUE_VALUES = """
INSERT INTO usage_unique_values (
    tenant, customer, meter, subscription_item, period_start, value, bucket_start, dims
)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
    $7::timestamptz[], $8::text[]
)
ON CONFLICT DO NOTHING
RETURNING tenant, customer, meter, subscription_item, period_start, value
"""

UNIQUE_COUNT_METERS = """
SELECT tenant, meter, unique_property FROM meter_definitions WHERE aggregation = 'unique_count'
"""

# --- dimensions (aggregator/dimensions.py, docs/dimensions.md) ---------------------------------
# Every dimension version (a handful of rows; read by each flush, like UNIQUE_COUNT_METERS).
DIMENSION_VERSIONS = "SELECT tenant, meter, effective_from, keys FROM meter_dimensions"
# Guard pairs travel as one JSON array of [tenant, customer, meter, item, period start ms,
# combination] (item '' and period 0 for unattributed usage, migrations/0018_dimensions.sql),
# numbered from 1 in that order: asyncpg checks every element of an array parameter against
# three ABCs, which cost more than the statements themselves at ~12,000 pairs a batch.
_GUARD_INPUT = """(
    SELECT j.n, j.v->>0 AS tenant, j.v->>1 AS customer, j.v->>2 AS meter, j.v->>3 AS item,
        (j.v->>4)::bigint AS period_ms, j.v->>5 AS dims
    FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS j(v, n)
) AS u"""
_GUARD_SET_MATCH = """c.tenant = u.tenant AND c.customer = u.customer AND c.meter = u.meter
    AND c.subscription_item = u.item AND c.period_ms = u.period_ms"""
# The numbers of the pairs not admitted yet (none, once a stream's combinations are known).
UNKNOWN_COMBOS = f"""
SELECT u.n FROM {_GUARD_INPUT}
WHERE NOT EXISTS (
    SELECT 1 FROM usage_dimension_combos c WHERE {_GUARD_SET_MATCH} AND c.dims = u.dims)
"""
# Admission into a set is guarded per set, so that concurrent flushes of two shards cannot
# both take its last slot: each set hashes to one of GUARD_LOCK_SLOTS two-int4 advisory locks
# under their own class id, taken in ascending order (one order for every flush: no deadlock,
# whatever sets collide and in whatever mode) and held to commit. A bounded number of slots bounds
# the locks one transaction holds, whatever the batch: Postgres' lock table is shared and fixed in
# size (max_locks_per_transaction × connections), and a lock per set could exhaust it.
# $2: the sets' keys, $3: whether the set needs its slot exclusively; a slot is taken exclusively
# if any of its sets needs it, else shared (meter.dimensions.shared_admission_holds says when a
# shared one is enough). Returns the numbers (from 1, in $2's order) of the sets whose slot was
# taken shared. Both subqueries run once; the second takes no lock, so their order is free.
DIMENSION_LOCK_CLASS = 0x6D64  # "md"
GUARD_LOCK_SLOTS = 256
_GUARD_KEYS = f"""(
    SELECT a.n, hashtext(a.k) & {GUARD_LOCK_SLOTS - 1} AS slot, a.x
    FROM unnest($2::text[], $3::bool[]) WITH ORDINALITY AS a(k, x, n)
)"""
LOCK_GUARD_SETS = f"""
WITH k AS MATERIALIZED {_GUARD_KEYS},
s AS MATERIALIZED (SELECT slot, bool_or(x) AS exclusive FROM k GROUP BY slot)
SELECT
    (SELECT count(CASE WHEN exclusive THEN pg_advisory_xact_lock($1::int, slot)
                       ELSE pg_advisory_xact_lock_shared($1::int, slot) END)
     FROM (SELECT * FROM s ORDER BY slot) o) AS held,
    (SELECT coalesce(array_agg(k.n), '{{}}') FROM k JOIN s USING (slot) WHERE NOT s.exclusive)
        AS shared
"""
# After the lock: for each pair, whether it is admitted already and the size of its set (one
# count per distinct set, not per pair), and N, the bound on the flushes in flight that
# shared_admission_holds takes: the checkpoint rows. A flush past its checkpoint compare-and-set
# (flush.py step 4) holds its own row's lock to commit, so two in flight never share a row, and
# that row was committed before its guard read (read_checkpoint): every flush holding a set lock
# at this read has its row counted here. Re-attribution never overlaps a flush (the fold lock).
GUARD_STATE = f"""
WITH u AS (SELECT * FROM {_GUARD_INPUT}),
sets AS (
    SELECT s.tenant, s.customer, s.meter, s.item, s.period_ms,
        (SELECT count(*) FROM usage_dimension_combos c
         WHERE c.tenant = s.tenant AND c.customer = s.customer AND c.meter = s.meter
           AND c.subscription_item = s.item AND c.period_ms = s.period_ms) AS size
    FROM (SELECT DISTINCT tenant, customer, meter, item, period_ms FROM u) s
)
SELECT u.n, sets.size,
    EXISTS (SELECT 1 FROM usage_dimension_combos c
            WHERE {_GUARD_SET_MATCH} AND c.dims = u.dims) AS known,
    (SELECT count(*) FROM stream_checkpoints) AS writers
FROM u JOIN sets USING (tenant, customer, meter, item, period_ms)
"""
ADMIT_COMBOS = f"""
INSERT INTO usage_dimension_combos (tenant, customer, meter, subscription_item, period_ms, dims)
SELECT u.tenant, u.customer, u.meter, u.item, u.period_ms, u.dims FROM {_GUARD_INPUT}
ON CONFLICT DO NOTHING
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
       properties::text AS properties, dims
FROM usage_events
WHERE tenant = $1 AND customer = $2 AND subscription_item IS NULL AND event_time >= $3
ORDER BY event_time, event_id
"""
SET_ATTRIBUTION = """
UPDATE usage_events e SET subscription_item = u.item, period_start = u.period_start,
    dims = nullif(u.dims, '')
FROM unnest($3::text[], $4::timestamptz[], $5::text[], $6::timestamptz[], $7::text[])
    AS u(event_id, event_time, item, period_start, dims)
WHERE e.tenant = $1 AND e.customer = $2 AND e.event_id = u.event_id
  AND e.event_time = u.event_time AND e.subscription_item IS NULL
"""
# The customer's unattributed buckets with their state (re-attribution reads them under the
# exclusive fold lock, so no flush changes them until it commits).
UNATTRIBUTED_BUCKETS = """
SELECT meter, bucket_start, bucket_end, event_count, value_sum::text AS value_sum,
    value_max::text AS value_max, last_value::text AS last_value, last_at, last_event_id, dims
FROM usage_rollups
WHERE tenant = $1 AND customer = $2 AND subscription_item IS NULL AND bucket_start >= $3
ORDER BY meter, bucket_start, dims
"""
# $3/$4: the (meter, bucket start) of each bucket to delete.
DELETE_UNATTRIBUTED_BUCKETS = """
DELETE FROM usage_rollups r
USING unnest($3::text[], $4::timestamptz[]) AS u(meter, bucket_start)
WHERE r.tenant = $1 AND r.customer = $2 AND r.subscription_item IS NULL
  AND r.meter = u.meter AND r.bucket_start = u.bucket_start
"""
# The distinct values credited to these buckets ($3/$4: meter and bucket start of each),
# returned: re-attribution moves them into an item's set (whole moves) or folds them again from
# the raw log (rebuilds).
DELETE_UNATTRIBUTED_VALUES = """
DELETE FROM usage_unique_values v
USING unnest($3::text[], $4::timestamptz[]) AS u(meter, bucket_start)
WHERE v.tenant = $1 AND v.customer = $2 AND v.subscription_item IS NULL
  AND v.meter = u.meter AND v.bucket_start = u.bucket_start
RETURNING v.meter, v.value, v.bucket_start, v.dims
"""

# --- period cuts (aggregator/cuts.py) ----------------------------------------------------------
# An item's billing period was cut short at $4 by a new period starting there (a billing-cycle
# anchor reset). Its buckets at or after $4 that were folded into an earlier period (before the
# new period was known) move to the new period; $1 tenant, $2 the customer's keys, $3 the item.
# bucket_start identifies a bucket of an item, so no moved row can collide with a row already in
# the new period. Versions stay: the reporter's marks of delta buckets do not depend on the period.
MOVE_BUCKETS_TO_PERIOD = """
UPDATE usage_rollups SET period_start = $4, updated_at = now()
WHERE tenant = $1 AND customer = ANY($2::text[]) AND subscription_item = $3
    AND period_start < $4 AND bucket_start >= $4
"""
# The periods, before the move, of the buckets MOVE_BUCKETS_TO_PERIOD is about to move.
PERIODS_TO_MOVE = """
SELECT DISTINCT period_start FROM usage_rollups
WHERE tenant = $1 AND customer = ANY($2::text[]) AND subscription_item = $3
    AND period_start < $4 AND bucket_start >= $4
"""
# Their raw events, so that a void finds the bucket by the period recorded here: an event moved
# iff its bucket did, i.e. iff its UTC hour starts at or after $4 (its bucket in the earlier
# period began at that hour).
MOVE_RAW_EVENTS_TO_PERIOD = """
UPDATE usage_events SET period_start = $4
WHERE tenant = $1 AND customer = ANY($2::text[]) AND subscription_item = $3
    AND period_start < $4 AND event_time >= $4
    AND date_bin('1 hour', event_time, timestamptz '2000-01-01 00:00:00+00') >= $4
"""
# Distinct values credited to moved buckets: a value the new period's set already holds is
# counted there once already, so its moved copy is dropped and its bucket's credit taken back.
DROP_MOVED_DUPLICATE_VALUES = """
WITH dup AS (
    DELETE FROM usage_unique_values o
    USING usage_unique_values n
    WHERE o.tenant = $1 AND o.customer = ANY($2::text[]) AND o.subscription_item = $3
        AND o.period_start < $4 AND o.bucket_start >= $4
        AND n.tenant = o.tenant AND n.customer = o.customer AND n.meter = o.meter
        AND n.subscription_item = o.subscription_item AND n.period_start = $4
        AND n.value = o.value
    RETURNING o.tenant, o.customer, o.meter, o.bucket_start, o.dims
)
UPDATE usage_rollups r SET unique_count = r.unique_count - d.n
FROM (SELECT tenant, customer, meter, bucket_start, dims, count(*) AS n FROM dup
      GROUP BY tenant, customer, meter, bucket_start, dims) d
WHERE r.tenant = d.tenant AND r.customer = d.customer AND r.meter = d.meter
    AND r.subscription_item = $3 AND r.bucket_start = d.bucket_start AND r.dims = d.dims
"""
# The combinations of the buckets about to move join the new period's guard set, beyond its
# limit if need be: usage already folded never moves to `_other` (docs/dimensions.md).
ADMIT_MOVED_COMBOS = """
INSERT INTO usage_dimension_combos (tenant, customer, meter, subscription_item, period_ms, dims)
SELECT DISTINCT tenant, customer, meter, subscription_item,
    (extract(epoch FROM $4::timestamptz) * 1000)::bigint, dims
FROM usage_rollups
WHERE tenant = $1 AND customer = ANY($2::text[]) AND subscription_item = $3
    AND period_start < $4 AND bucket_start >= $4 AND dims NOT IN ('', '_other')
ON CONFLICT DO NOTHING
"""
MOVE_UNIQUE_VALUES = """
UPDATE usage_unique_values SET period_start = $4
WHERE tenant = $1 AND customer = ANY($2::text[]) AND subscription_item = $3
    AND period_start < $4 AND bucket_start >= $4
"""
# The running totals of the item's periods $4 (an array) folded again from their buckets.
DELETE_TOTALS_OF = """
DELETE FROM usage_totals
WHERE tenant = $1 AND customer = ANY($2::text[]) AND subscription_item = $3
    AND period_start = ANY($4::timestamptz[])
"""
INSERT_TOTALS_OF = f"""
INSERT INTO usage_totals (tenant, customer, subscription_item, period_start, meter, event_count,
    value_sum, value_max, last_value, last_at, last_event_id, unique_count)
{_TOTALS_SELECT}
WHERE tenant = $1 AND customer = ANY($2::text[]) AND subscription_item = $3
    AND period_start = ANY($4::timestamptz[])
{_TOTALS_GROUP}"""

# --- voids (aggregator/subtract.py) -----------------------------------------------------------
# Version + 1: the reporter sees the bucket as grown and sends `value now - value sent`, i.e.
# the negative delta. value_max/last_value are left as they are: sum/count meters do not use them.
# The bucket is the one the event was folded into: its item and billing period ($7) as the raw
# log recorded them, and the event's time. Buckets of one (item, period) never overlap, but
# buckets of two periods of one item can (an anchor reset cuts a period after usage was folded
# into it), so the period is part of the match, and so is the event's combination of dimension
# values ($8, from the raw log): exactly one bucket shrinks.
SUBTRACT_EVENT = """
UPDATE usage_rollups
SET value_sum = value_sum - $6, event_count = event_count - 1, version = version + 1,
    updated_at = now()
WHERE tenant = $1 AND customer = $2 AND meter = $3 AND subscription_item = $4
  AND period_start = $7 AND bucket_start <= $5 AND $5 < bucket_end AND dims = $8
RETURNING bucket_start, period_start
"""
# The same subtraction from the bucket's period total (migrations/0007_usage_totals.sql).
SUBTRACT_TOTAL = """
UPDATE usage_totals
SET value_sum = value_sum - $6, event_count = event_count - 1
WHERE tenant = $1 AND customer = $2 AND meter = $3 AND subscription_item = $4
  AND period_start = $5
"""
