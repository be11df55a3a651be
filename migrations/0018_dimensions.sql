-- Dimensions: usage broken down by up to 3 keys of the events' `properties` (docs/dimensions.md).

-- Which property keys a meter breaks its usage down by, from `effective_from` onward (the event
-- time). A change is a new row, never an update of an old one: an event is folded under the row in
-- effect at its timestamp, so a replay, a re-attribution or a late event makes the same choice,
-- and usage folded before the change keeps the combination it was folded (and billed) under.
-- An empty `keys` ends the breakdown from that moment. Written by `meter meters update` and
-- `PUT /v1/meters/{name}/dimensions` (meter/queries.py), read by the aggregator.
CREATE TABLE meter_dimensions (
    tenant          text        NOT NULL,
    meter           text        NOT NULL,
    effective_from  timestamptz NOT NULL,
    keys            text[]      NOT NULL CHECK (cardinality(keys) <= 3),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, meter, effective_from)
);

-- The combination a bucket holds: '' for a meter without dimensions, '_other' for usage beyond
-- the cardinality guard, else the canonical JSON object of its values (meter/dimensions.py). Part
-- of the bucket's identity: one bucket per combination per hour ∩ period.
ALTER TABLE usage_rollups ADD COLUMN dims text NOT NULL DEFAULT '';
ALTER TABLE usage_rollups DROP CONSTRAINT
    usage_rollups_tenant_customer_meter_subscription_item_bucke_key;
ALTER TABLE usage_rollups ADD CONSTRAINT usage_rollups_bucket_key
    UNIQUE NULLS NOT DISTINCT (tenant, customer, meter, subscription_item, bucket_start, dims);

-- The combination each raw event was folded into (null: ''), so that a void subtracts from
-- exactly that bucket and re-attribution knows what it moves.
ALTER TABLE usage_events ADD COLUMN dims text;

-- The bucket (with its combination) a distinct value was credited to.
ALTER TABLE usage_unique_values ADD COLUMN dims text NOT NULL DEFAULT '';

-- The cardinality guard: the combinations admitted per (customer, meter, item, billing period);
-- unattributed usage forms one set per customer and meter, as usage_unique_values does (item ''
-- and period 0 here: plain equality keeps every lookup on the primary key). The period start is
-- unix ms, as the aggregator computes it. A combination is admitted while its set has room; usage
-- of any other goes to '_other'. Written in the fold's transaction, so a crash keeps or loses
-- admissions and buckets together.
CREATE TABLE usage_dimension_combos (
    tenant             text   NOT NULL,
    customer           text   NOT NULL,
    meter              text   NOT NULL,
    subscription_item  text   NOT NULL,
    period_ms          bigint NOT NULL,
    dims               text   NOT NULL,
    PRIMARY KEY (tenant, customer, meter, subscription_item, period_ms, dims)
);

-- Pricing per dimension: the usage of a meter's combinations matching `filter` (dimension key →
-- value) is sent to the Stripe meter of `event_name`, which feeds the Stripe price `price` (kept
-- to show and check; Stripe links price and meter). The mappings of one meter all filter on the
-- same keys, so a combination matches at most one (meter/dimensions.py route). Unmapped usage
-- goes to the meter's own Stripe meter (event name = meter). Written by `meter meters map`,
-- read by the reporter and the usage API.
CREATE TABLE meter_price_mappings (
    tenant      text        NOT NULL,
    meter       text        NOT NULL,
    filter      jsonb       NOT NULL CHECK (jsonb_typeof(filter) = 'object'),
    event_name  text        NOT NULL CHECK (length(event_name) BETWEEN 1 AND 100),
    price       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, meter, filter)
);

-- The value of dimension `key` in a stored combination, as the usage API shows it: `_other` for
-- every key of the overflow combination, `none` for a key the combination lacks (or a bucket
-- without dimensions). The same rule as meter/dimensions.py values_of.
CREATE FUNCTION meter_dimension_value(dims text, key text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN key IS NULL THEN NULL
        WHEN dims = '_other' THEN '_other'
        WHEN dims = '' THEN 'none'
        ELSE coalesce(dims::jsonb ->> key, 'none')
    END
$$;

-- The reporter's marks are per bucket, and a bucket is now also its combination.
ALTER TABLE report_marks ADD COLUMN dims text NOT NULL DEFAULT '';
ALTER TABLE report_marks DROP CONSTRAINT report_marks_pkey;
ALTER TABLE report_marks ADD PRIMARY KEY
    (tenant, customer, meter, subscription_item, unit, unit_start, dims);

-- Each bucket with the value its meter reports (as in 0012, with the new column).
CREATE OR REPLACE VIEW usage_rollup_values AS
SELECT
    r.id, r.tenant, r.customer, r.meter, r.subscription_item, r.period_start, r.bucket_start,
    r.bucket_end, r.event_count, r.value_sum, r.value_max, r.last_value, r.last_at,
    r.last_event_id, r.unique_count, r.version, r.created_at, r.updated_at,
    coalesce(d.aggregation, s.aggregation, 'sum') AS aggregation,
    CASE coalesce(d.aggregation, s.aggregation, 'sum')
        WHEN 'sum' THEN r.value_sum
        WHEN 'count' THEN r.event_count::numeric
        WHEN 'max' THEN r.value_max
        WHEN 'last' THEN r.last_value
        WHEN 'unique_count' THEN r.unique_count::numeric
    END AS value,
    r.dims
FROM usage_rollups r
LEFT JOIN meter_definitions d ON d.tenant = r.tenant AND d.meter = r.meter
LEFT JOIN stripe_meter_formulas s ON s.meter = r.meter;
