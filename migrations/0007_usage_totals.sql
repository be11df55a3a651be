-- Running totals per (customer, subscription item, billing period, meter): what the usage API
-- reads for "how much this period" (one row per meter instead of ~720 hourly buckets a month).
--
-- Every writer of attributed buckets writes the same change here in its own transaction: the
-- aggregator's fold (aggregator/store.py upsert_buckets, also used by re-attribution, whose
-- deletes touch unattributed buckets only) and `meter usage void` (reporter/voids.py). So a
-- crash keeps or loses bucket and total together. Unattributed usage (no item yet) has no total.
-- max and last only grow under these writers (a void leaves them as the bucket does).
CREATE TABLE usage_totals (
    tenant             text        NOT NULL,
    customer           text        NOT NULL,
    subscription_item  text        NOT NULL,
    period_start       timestamptz NOT NULL,
    meter              text        NOT NULL,
    event_count        bigint      NOT NULL,
    value_sum          numeric     NOT NULL,
    value_max          numeric     NOT NULL,
    last_value         numeric     NOT NULL,
    last_at            timestamptz NOT NULL,
    last_event_id      text        NOT NULL,
    unique_count       bigint      NOT NULL,
    PRIMARY KEY (tenant, customer, subscription_item, period_start, meter)
);

-- Existing buckets (an upgrade), folded as the aggregator folds them.
INSERT INTO usage_totals
SELECT tenant, customer, subscription_item, period_start, meter,
       sum(event_count), sum(value_sum), max(value_max),
       (array_agg(last_value ORDER BY last_at DESC, last_event_id COLLATE "C" DESC))[1],
       max(last_at),
       (array_agg(last_event_id ORDER BY last_at DESC, last_event_id COLLATE "C" DESC))[1],
       sum(unique_count)
FROM usage_rollups
WHERE subscription_item IS NOT NULL
GROUP BY tenant, customer, subscription_item, period_start, meter;
