-- Usage alerts (docs/alerts.md). alert_rules is written by the API (meter/alerts/); the other
-- three by the evaluator (evaluator/), which the API only reads.
CREATE TABLE alert_rules (
    id text PRIMARY KEY,                 -- 'alr_' and random hex
    tenant text NOT NULL,
    -- One customer (our id or the cus_ id) or NULL: every customer of the tenant.
    customer text,
    meter text NOT NULL,
    -- Dimension values the usage must have ({"model": "large"}; docs/dimensions.md), or {}: the
    -- whole meter. `units` rules only.
    filter jsonb NOT NULL DEFAULT '{}',
    -- units | amount | percent_of_limit | projected
    kind text NOT NULL,
    -- Ascending, distinct, positive; the highest is the hard limit when hard_limit is set.
    thresholds numeric[] NOT NULL,
    hard_limit boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_rules_tenant_meter ON alert_rules (tenant, meter);

-- One row per (rule, customer, billing period, threshold) that fired: the unique key is the
-- exactly-once guard. The evaluator inserts it ON CONFLICT DO NOTHING and enqueues the webhook
-- event only when its insert created the row, in the same transaction.
CREATE TABLE alert_firings (
    rule text NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    tenant text NOT NULL,
    customer text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    threshold numeric NOT NULL,
    value numeric NOT NULL,              -- the rule's value when it fired
    event text NOT NULL,                 -- the webhook_events id enqueued with it
    fired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule, customer, period_start, threshold)
);

-- The latest value the evaluator computed per (rule, customer, period), for the states API.
CREATE TABLE alert_states (
    rule text NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    tenant text NOT NULL,
    customer text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    value numeric NOT NULL,
    evaluated_at timestamptz NOT NULL,
    PRIMARY KEY (rule, customer, period_start)
);

-- A hard limit reached: the meter is blocked for the customer until the period ends. The row
-- is the exactly-once guard of usage.limit_reached (insert) and usage.limit_cleared (cleared_at
-- set); the Redis block (meter/limits.py) is asserted again from it after each evaluation.
CREATE TABLE alert_limits (
    rule text NOT NULL,                  -- no foreign key: a deleted rule's clear is recorded
    tenant text NOT NULL,
    customer text NOT NULL,
    -- Every key the customer's events may name it by (our id, the cus_ id): each is blocked.
    keys text[] NOT NULL,
    meter text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    reached_at timestamptz NOT NULL DEFAULT now(),
    cleared_at timestamptz,
    PRIMARY KEY (rule, customer, period_start)
);
CREATE INDEX alert_limits_standing ON alert_limits (rule, customer) WHERE cleared_at IS NULL;
