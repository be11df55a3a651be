-- Stripe meter formulas apply to every tenant; Stripe `count` meters are stored but not reported.
--
-- Stripe billing meters belong to the Stripe account, and every tenant reports into the same
-- account, so a Stripe meter's formula is the aggregation of its event name for every tenant.
-- A tenant's local definition (meter_definitions) still wins: max and unique_count meters, which
-- Stripe cannot express, are reported to Stripe `last` meters. The rule, in every reader of an
-- aggregation (this view, the usage API, voids):
--     coalesce(local definition of (tenant, meter), stripe_meter_formulas.aggregation, 'sum')
-- Until now `meter sync` copied the formula into meter_definitions for the default tenant only
-- (source 'stripe'), so other tenants' `last` meters were reported as sums. Those copies go:
-- the formula is read from billing_meters itself, so it cannot go stale either.

-- A Stripe `count` meter counts meter events and ignores their values, while the reporter sends
-- one event per bucket carrying the bucket's count: Stripe would bill 1 for 5 events. Such a
-- meter is kept (prices point at it) but not reportable: usage of its event name waits in the
-- rollups, counted, until a reportable meter with that event name exists.
ALTER TABLE billing_meters ADD COLUMN reportable boolean NOT NULL DEFAULT true;
UPDATE billing_meters SET reportable = formula IN ('sum', 'last');

DELETE FROM meter_definitions WHERE source = 'stripe';

-- The Stripe meter of each event name: the active one (Stripe allows one active meter per event
-- name), else the newest. `aggregation` is null for a meter the reporter cannot report to.
CREATE VIEW stripe_meter_formulas AS
SELECT DISTINCT ON (event_name)
    event_name AS meter,
    id AS stripe_meter,
    formula,
    reportable,
    CASE WHEN reportable THEN formula END AS aggregation
FROM billing_meters
ORDER BY event_name, status = 'active' DESC, event_created DESC, id;

-- Each bucket with the value its meter reports (same columns as in 0002, new aggregation rule).
CREATE OR REPLACE VIEW usage_rollup_values AS
SELECT
    r.*,
    coalesce(d.aggregation, s.aggregation, 'sum') AS aggregation,
    CASE coalesce(d.aggregation, s.aggregation, 'sum')
        WHEN 'sum' THEN r.value_sum
        WHEN 'count' THEN r.event_count::numeric
        WHEN 'max' THEN r.value_max
        WHEN 'last' THEN r.last_value
        WHEN 'unique_count' THEN r.unique_count::numeric
    END AS value
FROM usage_rollups r
LEFT JOIN meter_definitions d ON d.tenant = r.tenant AND d.meter = r.meter
LEFT JOIN stripe_meter_formulas s ON s.meter = r.meter;
