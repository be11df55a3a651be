-- Usage: the raw event log, hourly rollups, stream checkpoints and meter definitions.
-- Written by the aggregator (aggregator/), read by the reporter and the usage API.

-- Durable dedupe. The design wants UNIQUE (tenant, event_id) over the raw log, but the raw log is
-- partitioned by day of the event timestamp, and a unique constraint on a partitioned table must
-- include the partition key: UNIQUE (tenant, event_id, event_time) would let a retried event with
-- another timestamp (e.g. one that let the timestamp default to "now") through on another day.
-- So uniqueness lives in this plain table, keyed by exactly (tenant, event_id); the aggregator
-- inserts here first (ON CONFLICT DO NOTHING RETURNING) and writes only the returned, new events
-- to the raw log, in the same statement. A row lives as long as its raw event: the retention job
-- deletes the ids of a partition in the transaction that drops it (by then ingest answers any
-- retry of the event with `too_late`, since retention exceeds the late window).
CREATE TABLE usage_event_ids (
    tenant    text NOT NULL,
    event_id  text NOT NULL,
    PRIMARY KEY (tenant, event_id)
);

-- The raw event log, one partition per UTC day of the event timestamp, so that retention is a
-- DROP TABLE and never a DELETE. No primary key of its own: usage_event_ids is the unique index,
-- and a second one here would cost every insert for nothing.
-- subscription_item/period_start record the attribution the event was folded under (null: not
-- attributed yet); re-attribution finds the unattributed events of a customer by them.
CREATE TABLE usage_events (
    tenant             text        NOT NULL,
    event_id           text        NOT NULL,
    customer           text        NOT NULL,
    meter              text        NOT NULL,
    value              numeric     NOT NULL,
    event_time         timestamptz NOT NULL,
    received_at        timestamptz NOT NULL,
    properties         jsonb,
    subscription_item  text,
    period_start       timestamptz,
    -- The Redis stream entry the event came from (debugging, audits).
    stream_id          text        NOT NULL,
    aggregated_at      timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (event_time);

CREATE INDEX usage_events_unattributed ON usage_events (tenant, customer)
    WHERE subscription_item IS NULL;

-- Creates the partition for one UTC day if it does not exist; returns whether it did. Two
-- workers may call it for the same day at once; safe to call any number of times.
CREATE FUNCTION meter_ensure_usage_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    name text := 'usage_events_p' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('meter_usage_partitions'));
    -- The name lookup above may use a catalog snapshot from before the lock, so a partition
    -- another worker just created can still look absent: its creation error means "exists".
    BEGIN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF usage_events FOR VALUES FROM (%L) TO (%L)',
            name,
            (day::timestamp AT TIME ZONE 'UTC'),
            ((day + 1)::timestamp AT TIME ZONE 'UTC')
        );
    EXCEPTION WHEN duplicate_table THEN
        RETURN false;
    END;
    RETURN true;
END
$$;

-- Drops every raw partition of a day before `cutoff` together with its dedupe ids; returns the
-- names dropped. Rollups are untouched. One partition per transaction is the caller's choice:
-- this function runs in the caller's transaction, so ids and partition go together or not at all.
CREATE FUNCTION meter_drop_usage_partitions_before(cutoff date) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('meter_usage_partitions'));
    FOR part IN
        SELECT c.relname::text
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'usage_events'::regclass
          AND c.relname ~ '^usage_events_p[0-9]{8}$'
          AND to_date(substr(c.relname, 15), 'YYYYMMDD') < cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format(
            'DELETE FROM usage_event_ids d USING %I e '
            'WHERE d.tenant = e.tenant AND d.event_id = e.event_id',
            part
        );
        EXECUTE format('DROP TABLE %I', part);
        RETURN NEXT part;
    END LOOP;
END
$$;

-- Rollup buckets. A bucket is (tenant, customer, meter, subscription item, hour ∩ billing period):
-- bucket_start/bucket_end are the hour cut at a period boundary, so no bucket straddles two
-- invoices. Within one (tenant, customer, meter, item) buckets never overlap, so bucket_start
-- identifies the bucket. A null subscription_item (and period_start) means "not attributed yet":
-- such buckets are whole hours and are rebuilt from the raw log by re-attribution.
-- Every bucket keeps the state of all aggregations (count, sum, max, last, unique_count) so that
-- folding does not depend on the meter definition, and a definition may change what is reported
-- without touching the data; usage_rollup_values picks the one the meter asks for.
-- version/updated_at change on every fold into the bucket (late events included): the reporter
-- turns a version it has not sent yet into an outbox row.
CREATE TABLE usage_rollups (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant             text        NOT NULL,
    customer           text        NOT NULL,
    meter              text        NOT NULL,
    subscription_item  text,
    period_start       timestamptz,
    bucket_start       timestamptz NOT NULL,
    bucket_end         timestamptz NOT NULL,
    event_count        bigint      NOT NULL,
    value_sum          numeric     NOT NULL,
    value_max          numeric     NOT NULL,
    -- The value of the latest event by (event_time, event_id).
    last_value         numeric     NOT NULL,
    last_at            timestamptz NOT NULL,
    last_event_id      text        NOT NULL,
    -- Distinct property values first seen in this bucket's billing period, credited to this
    -- bucket; summed over a period it is the exact distinct count (see usage_unique_values).
    unique_count       bigint      NOT NULL DEFAULT 0,
    version            bigint      NOT NULL DEFAULT 1,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (bucket_start < bucket_end),
    CHECK ((subscription_item IS NULL) = (period_start IS NULL)),
    UNIQUE NULLS NOT DISTINCT (tenant, customer, meter, subscription_item, bucket_start)
);

CREATE INDEX usage_rollups_updated ON usage_rollups (updated_at);
CREATE INDEX usage_rollups_unattributed ON usage_rollups (tenant, customer)
    WHERE subscription_item IS NULL;

-- The exact set of distinct values per (customer, meter, item, billing period) for unique_count
-- meters; bucket_start is the bucket the value was credited to (the first event that brought it).
-- Unattributed values (null item and period) form one set per customer and meter until
-- re-attribution moves them.
CREATE TABLE usage_unique_values (
    tenant             text        NOT NULL,
    customer           text        NOT NULL,
    meter              text        NOT NULL,
    subscription_item  text,
    period_start       timestamptz,
    value              text        NOT NULL,
    bucket_start       timestamptz NOT NULL,
    UNIQUE NULLS NOT DISTINCT (tenant, customer, meter, subscription_item, period_start, value)
);

-- One row per Redis stream: the id of the last entry folded into Postgres. The aggregator
-- advances it in the same transaction as the fold, with a compare-and-set on the old value.
CREATE TABLE stream_checkpoints (
    stream      text        PRIMARY KEY,
    last_id     text        NOT NULL DEFAULT '0-0',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- How each meter aggregates. Local rows are the override for what Stripe meters cannot express
-- (max, unique_count); the billing module's Stripe sync will write rows with source 'stripe'.
-- A meter without a row aggregates as sum.
CREATE TABLE meter_definitions (
    tenant           text        NOT NULL,
    meter            text        NOT NULL,
    aggregation      text        NOT NULL
        CHECK (aggregation IN ('sum', 'count', 'max', 'last', 'unique_count')),
    -- The event property whose distinct values a unique_count meter counts.
    unique_property  text,
    source           text        NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'stripe')),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, meter),
    CHECK ((aggregation = 'unique_count') = (unique_property IS NOT NULL))
);

-- Each bucket with the value its meter reports.
CREATE VIEW usage_rollup_values AS
SELECT
    r.*,
    coalesce(d.aggregation, 'sum') AS aggregation,
    CASE coalesce(d.aggregation, 'sum')
        WHEN 'sum' THEN r.value_sum
        WHEN 'count' THEN r.event_count::numeric
        WHEN 'max' THEN r.value_max
        WHEN 'last' THEN r.last_value
        WHEN 'unique_count' THEN r.unique_count::numeric
    END AS value
FROM usage_rollups r
LEFT JOIN meter_definitions d ON d.tenant = r.tenant AND d.meter = r.meter;
