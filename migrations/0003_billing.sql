-- Billing: Postgres kept in step with Stripe by webhooks and `meter sync` (meter/billing/).
-- Stripe is the source of truth; these rows are its copy. Every synced row keeps
-- `event_created`, the Stripe `created` time (unix seconds) of the last event applied to it:
-- an event older than that never overwrites the row (order safety, see meter/billing/rules.py).

-- A Stripe customer and the id our API and usage events know it by (`external_id`: the
-- checkout `client_reference_id` or `metadata.meter_customer`, else the `cus_` id itself).
CREATE TABLE customers (
    stripe_id      text        PRIMARY KEY,
    tenant         text        NOT NULL,
    external_id    text        NOT NULL,
    email          text,
    name           text,
    metadata       jsonb       NOT NULL DEFAULT '{}',
    deleted        boolean     NOT NULL DEFAULT false,
    event_created  bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, external_id)
);

CREATE TABLE products (
    id             text        PRIMARY KEY,
    name           text        NOT NULL,
    active         boolean     NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}',
    deleted        boolean     NOT NULL DEFAULT false,
    event_created  bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Amounts in the currency's minor unit, as in Stripe. `meter` is the Stripe billing meter id of a
-- metered price (recurring.meter).
CREATE TABLE prices (
    id                     text        PRIMARY KEY,
    product                text        NOT NULL,
    active                 boolean     NOT NULL,
    currency               text        NOT NULL,
    nickname               text,
    lookup_key             text,
    billing_scheme         text        NOT NULL,
    unit_amount            bigint,
    unit_amount_decimal    text,
    tiers_mode             text,
    tiers                  jsonb,
    transform_quantity     jsonb,
    recurring_interval     text,
    recurring_interval_count integer,
    usage_type             text,
    meter                  text,
    metadata               jsonb       NOT NULL DEFAULT '{}',
    event_created          bigint      NOT NULL,
    updated_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE billing_meters (
    id             text        PRIMARY KEY,
    event_name     text        NOT NULL,
    display_name   text,
    formula        text        NOT NULL,
    customer_key   text        NOT NULL,
    value_key      text        NOT NULL,
    event_window   text,
    status         text        NOT NULL,
    event_created  bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX billing_meters_event_name ON billing_meters (event_name);

-- Since API version 2025-03-31 periods live on the items; the subscription's period here is its
-- first item's, which is what invoices and the self-service API show.
CREATE TABLE subscriptions (
    id                    text        PRIMARY KEY,
    customer              text        NOT NULL,
    status                text        NOT NULL,
    currency              text,
    current_period_start  timestamptz,
    current_period_end    timestamptz,
    trial_start           timestamptz,
    trial_end             timestamptz,
    cancel_at_period_end  boolean     NOT NULL DEFAULT false,
    cancel_at             timestamptz,
    canceled_at           timestamptz,
    ended_at              timestamptz,
    pause_behavior        text,
    latest_invoice        text,
    metadata              jsonb       NOT NULL DEFAULT '{}',
    stripe_created        timestamptz NOT NULL,
    event_created         bigint      NOT NULL,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX subscriptions_customer ON subscriptions (customer);

-- Items of a subscription; an item no longer in the subscription keeps its row with
-- `removed_at`, because usage of its past periods is still attributed to it.
CREATE TABLE subscription_items (
    id                    text        PRIMARY KEY,
    subscription          text        NOT NULL,
    price                 text        NOT NULL,
    product               text,
    quantity              bigint,
    meter                 text,
    current_period_start  timestamptz NOT NULL,
    current_period_end    timestamptz NOT NULL,
    removed_at            timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX subscription_items_subscription ON subscription_items (subscription);

-- Every billing period an item has had (Stripe only shows the current one). The aggregator's
-- attributor reads this, so late usage of a closed period still lands in that period.
CREATE TABLE subscription_item_periods (
    item          text        NOT NULL,
    period_start  timestamptz NOT NULL,
    period_end    timestamptz NOT NULL,
    meter         text,
    PRIMARY KEY (item, period_start),
    CHECK (period_start < period_end)
);

CREATE TABLE invoices (
    id                    text        PRIMARY KEY,
    customer              text        NOT NULL,
    subscription          text,
    status                text        NOT NULL,
    billing_reason        text,
    currency              text        NOT NULL,
    subtotal              bigint      NOT NULL,
    total                 bigint      NOT NULL,
    amount_due            bigint      NOT NULL,
    amount_paid           bigint      NOT NULL,
    amount_remaining      bigint      NOT NULL,
    attempt_count         integer     NOT NULL DEFAULT 0,
    next_payment_attempt  timestamptz,
    period_start          timestamptz,
    period_end            timestamptz,
    hosted_invoice_url    text,
    stripe_created        timestamptz NOT NULL,
    event_created         bigint      NOT NULL,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX invoices_subscription ON invoices (subscription);
CREATE INDEX invoices_customer ON invoices (customer);

-- Webhook idempotency: an event id is inserted in the same transaction as its effect.
CREATE TABLE stripe_events (
    id           text        PRIMARY KEY,
    type         text        NOT NULL,
    created      bigint      NOT NULL,
    outcome      text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- Every failed payment attempt, as reported by invoice.payment_failed.
CREATE TABLE payment_failures (
    event_id       text        PRIMARY KEY,
    invoice        text        NOT NULL,
    subscription   text,
    customer       text        NOT NULL,
    attempt_count  integer     NOT NULL,
    amount_due     bigint      NOT NULL,
    failed_at      timestamptz NOT NULL
);

-- Dunning of a subscription with an unpaid invoice: one row while it lasts. `failed_at` is
-- Stripe's time of the first failure (a test clock's time for customers on one); reminders are
-- `steps_sent` of the configured schedule; `restricted_at` once the grace period ran out.
CREATE TABLE dunning (
    subscription   text        PRIMARY KEY,
    customer       text        NOT NULL,
    invoice        text        NOT NULL,
    failed_at      timestamptz NOT NULL,
    steps_sent     integer     NOT NULL DEFAULT 0,
    restricted_at  timestamptz,
    resolved_at    timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dunning_open ON dunning (failed_at) WHERE resolved_at IS NULL;

-- Usage Stripe rejected after accepting it (v1.billing.meter.error_report_triggered).
CREATE TABLE meter_error_reports (
    event_id    text        PRIMARY KEY,
    meter       text,
    error_code  text,
    error_count integer     NOT NULL DEFAULT 0,
    message     text,
    report      jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- `meter sync` resume points: the last object id of each resource listed so far.
CREATE TABLE billing_sync_cursors (
    resource    text        PRIMARY KEY,
    cursor      text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
