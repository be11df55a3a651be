-- Reporter (reporter/): usage to Stripe Billing Meters through an outbox, exactly once.

-- What the reporter last put into the outbox per reported unit. A unit is a bucket for delta
-- meters (sum, count: `unit_start` = bucket_start) or a billing period for absolute meters
-- (last, max, unique_count: `unit_start` = period_start). `version` is the bucket's version
-- (for a period: the sum of its buckets' versions, which grows with every fold into any of them)
-- and `value` the cumulative value Stripe holds once the rows so far are sent. Written in the
-- same transaction as the outbox rows it accounts for.
CREATE TABLE report_marks (
    tenant             text        NOT NULL,
    customer           text        NOT NULL,
    meter              text        NOT NULL,
    subscription_item  text        NOT NULL,
    unit               text        NOT NULL CHECK (unit IN ('bucket', 'period')),
    unit_start         timestamptz NOT NULL,
    version            bigint      NOT NULL,
    value              numeric     NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, customer, meter, subscription_item, unit, unit_start)
);

-- One meter event to send. `identifier` is deterministic (unit key + version): a resend after a
-- timeout or a crash carries the same one, and Stripe drops the duplicate (>= 24 h).
-- status: pending → sent (after Stripe answered), or failed (Stripe refused it for good), or
-- review (past the dedupe horizon and event_summaries cannot tell whether it was applied), or
-- late (an absolute value for a period whose invoice is final: recorded, never sent).
-- `carried_from` is the timestamp inside the original bucket when usage that reached the reporter
-- after its period's invoice was finalized is carried into the current period (`event_time`).
CREATE TABLE report_outbox (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    identifier         text        NOT NULL UNIQUE CHECK (length(identifier) <= 100),
    tenant             text        NOT NULL,
    customer           text        NOT NULL,
    meter              text        NOT NULL,
    subscription_item  text        NOT NULL,
    period_start       timestamptz NOT NULL,
    stripe_customer    text        NOT NULL,
    event_name         text        NOT NULL,
    value              numeric     NOT NULL,
    absolute           boolean     NOT NULL,
    event_time         timestamptz NOT NULL,
    carried_from       timestamptz,
    status             text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed', 'review', 'late')),
    attempts           integer     NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    last_error         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    sent_at            timestamptz
);

-- Claims take the oldest usage first (a closing period is flushed before newer usage).
CREATE INDEX report_outbox_pending ON report_outbox (event_time, id) WHERE status = 'pending';
CREATE INDEX report_outbox_customer ON report_outbox (stripe_customer, event_name, event_time)
    WHERE status = 'sent';
