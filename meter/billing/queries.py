"""Every SQL statement of the billing module, by name. Schema: migrations/0003_billing.sql.

Upserts of synced objects carry their own order guard (`WHERE … event_created <= EXCLUDED…`):
whatever the caller decided, an older event can never overwrite a newer row.
"""

from __future__ import annotations

# --- webhook idempotency ----------------------------------------------------------------------
EVENT_SEEN = "SELECT outcome FROM stripe_events WHERE id = $1"
RECORD_EVENT = """
INSERT INTO stripe_events (id, type, created, outcome) VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO NOTHING RETURNING id
"""
SET_EVENT_OUTCOME = "UPDATE stripe_events SET outcome = $2 WHERE id = $1"

# --- customers --------------------------------------------------------------------------------
# Two writers of one new customer (checkout and its `customer.created` webhook) take turns: the
# row lock below has no row to lock yet, and ON CONFLICT resolves only the Stripe id, so the
# second insert failed on the other unique index (one live customer per external id).
LOCK_CUSTOMER = "SELECT pg_advisory_xact_lock(hashtextextended('customer:' || $1, 0))"
CUSTOMER_CREATED_FOR_UPDATE = (
    "SELECT event_created, tenant, external_id FROM customers WHERE stripe_id = $1 FOR UPDATE"
)
# $6: tenant from metadata (or null), $7: external id from metadata (or null), $8: the default
# tenant, $9: event created. A link once made (metadata or checkout) is kept when later events
# carry no metadata.
UPSERT_CUSTOMER = """
INSERT INTO customers AS c
    (stripe_id, email, name, metadata, deleted, tenant, external_id, event_created)
VALUES ($1, $2, $3, $4::jsonb, $5, coalesce($6, $8), coalesce($7, $1), $9)
ON CONFLICT (stripe_id) DO UPDATE SET
    email = EXCLUDED.email,
    name = EXCLUDED.name,
    metadata = EXCLUDED.metadata,
    deleted = EXCLUDED.deleted,
    tenant = coalesce($6, c.tenant),
    external_id = coalesce($7, c.external_id),
    event_created = EXCLUDED.event_created,
    updated_at = now()
WHERE c.event_created <= EXCLUDED.event_created
"""
MARK_CUSTOMER_DELETED = """
UPDATE customers SET deleted = true, event_created = $2, updated_at = now()
WHERE stripe_id = $1 AND event_created <= $2
"""
# A checkout's client_reference_id links a customer regardless of event order: it is a fact
# about the customer, not a state that a newer event could supersede.
LINK_CUSTOMER = """
INSERT INTO customers AS c (stripe_id, tenant, external_id, event_created)
VALUES ($1, $2, $3, 0)
ON CONFLICT (stripe_id) DO UPDATE SET
    tenant = EXCLUDED.tenant, external_id = EXCLUDED.external_id, updated_at = now()
"""
# The live Stripe customer holding one of our ids: a deleted one gave it up (migrations/0015).
EXTERNAL_ID_OWNER = (
    "SELECT stripe_id FROM customers WHERE tenant = $1 AND external_id = $2 AND NOT deleted"
)
# The newest deleted Stripe customer that held one of our ids (None: none did).
DELETED_EXTERNAL_ID_OWNER = """
SELECT stripe_id FROM customers WHERE tenant = $1 AND external_id = $2 AND deleted
ORDER BY event_created DESC, stripe_id DESC LIMIT 1
"""
ENSURE_CUSTOMER = """
INSERT INTO customers (stripe_id, tenant, external_id, event_created) VALUES ($1, $2, $1, 0)
ON CONFLICT (stripe_id) DO NOTHING
"""
CUSTOMER_BY_KEY = """
SELECT stripe_id, tenant, external_id, email, deleted, event_created FROM customers
WHERE tenant = $1 AND (external_id = $2 OR stripe_id = $2) AND NOT deleted
ORDER BY (external_id = $2) DESC LIMIT 1
"""
CUSTOMER_KEYS = "SELECT tenant, external_id, stripe_id FROM customers WHERE stripe_id = $1"

# --- catalog ----------------------------------------------------------------------------------
PRODUCT_CREATED = "SELECT event_created FROM products WHERE id = $1 FOR UPDATE"
UPSERT_PRODUCT = """
INSERT INTO products AS p (id, name, active, metadata, deleted, event_created)
VALUES ($1, $2, $3, $4::jsonb, $5, $6)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, active = EXCLUDED.active, metadata = EXCLUDED.metadata,
    deleted = EXCLUDED.deleted, event_created = EXCLUDED.event_created, updated_at = now()
WHERE p.event_created <= EXCLUDED.event_created
"""
PRICE_CREATED = "SELECT event_created FROM prices WHERE id = $1 FOR UPDATE"
_PRICE_INSERT = """
INSERT INTO prices AS p (id, product, active, currency, nickname, lookup_key, billing_scheme,
    unit_amount, unit_amount_decimal, tiers_mode, tiers, transform_quantity, recurring_interval,
    recurring_interval_count, usage_type, meter, metadata, event_created)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12::jsonb, $13, $14, $15, $16,
    $17::jsonb, $18)
"""
UPSERT_PRICE = (
    _PRICE_INSERT
    + """
ON CONFLICT (id) DO UPDATE SET
    product = EXCLUDED.product, active = EXCLUDED.active, currency = EXCLUDED.currency,
    nickname = EXCLUDED.nickname, lookup_key = EXCLUDED.lookup_key,
    billing_scheme = EXCLUDED.billing_scheme, unit_amount = EXCLUDED.unit_amount,
    unit_amount_decimal = EXCLUDED.unit_amount_decimal, tiers_mode = EXCLUDED.tiers_mode,
    tiers = CASE WHEN EXCLUDED.tiers_mode IS NULL THEN NULL
        ELSE coalesce(EXCLUDED.tiers, p.tiers) END,
    transform_quantity = EXCLUDED.transform_quantity,
    recurring_interval = EXCLUDED.recurring_interval,
    recurring_interval_count = EXCLUDED.recurring_interval_count,
    usage_type = EXCLUDED.usage_type, meter = EXCLUDED.meter, metadata = EXCLUDED.metadata,
    event_created = EXCLUDED.event_created, updated_at = now()
WHERE p.event_created <= EXCLUDED.event_created
"""
)
# A price's tiers come only when expanded (Stripe's `tiers` is includable; webhook payloads never
# carry them): a copy without tiers never erases stored ones (a price's tiers cannot change).
# A price embedded in a subscription item is stored if we have not seen it yet (created 0: any
# price event overwrites it), or lends its tiers to a stored copy that lacks them.
INSERT_PRICE_IF_MISSING = (
    _PRICE_INSERT
    + """
ON CONFLICT (id) DO UPDATE SET tiers = EXCLUDED.tiers, updated_at = now()
WHERE p.tiers IS NULL AND EXCLUDED.tiers IS NOT NULL AND p.tiers_mode IS NOT NULL
"""
)
# Whether a tiered price is stored with its tiers (else a webhook's copy is completed first).
PRICE_HAS_TIERS = "SELECT tiers IS NOT NULL FROM prices WHERE id = $1"
METER_CREATED = "SELECT event_created FROM billing_meters WHERE id = $1 FOR UPDATE"
# $9: whether the reporter can report to this meter (rules.meter_refusal), $10: event created.
UPSERT_METER = """
INSERT INTO billing_meters AS m (id, event_name, display_name, formula, customer_key, value_key,
    event_window, status, reportable, event_created)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (id) DO UPDATE SET
    event_name = EXCLUDED.event_name, display_name = EXCLUDED.display_name,
    formula = EXCLUDED.formula, customer_key = EXCLUDED.customer_key,
    value_key = EXCLUDED.value_key, event_window = EXCLUDED.event_window,
    status = EXCLUDED.status, reportable = EXCLUDED.reportable,
    event_created = EXCLUDED.event_created, updated_at = now()
WHERE m.event_created <= EXCLUDED.event_created
"""

# --- subscriptions ----------------------------------------------------------------------------
# The stored version of a subscription (the `created` of the newest event applied to it).
SUBSCRIPTION_VERSION = "SELECT event_created FROM subscriptions WHERE id = $1"
SUBSCRIPTION_FOR_UPDATE = """
SELECT status, event_created, discounts FROM subscriptions WHERE id = $1 FOR UPDATE
"""
UPSERT_SUBSCRIPTION = """
INSERT INTO subscriptions AS s (id, customer, status, currency, current_period_start,
    current_period_end, trial_start, trial_end, cancel_at_period_end, cancel_at, canceled_at,
    ended_at, pause_behavior, pause_resumes_at, latest_invoice, metadata, stripe_created,
    event_created, discounts, tax_rates)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16::jsonb, $17, $18,
    $19::jsonb, $20::jsonb)
ON CONFLICT (id) DO UPDATE SET
    customer = EXCLUDED.customer, status = EXCLUDED.status, currency = EXCLUDED.currency,
    current_period_start = EXCLUDED.current_period_start,
    current_period_end = EXCLUDED.current_period_end, trial_start = EXCLUDED.trial_start,
    trial_end = EXCLUDED.trial_end, cancel_at_period_end = EXCLUDED.cancel_at_period_end,
    cancel_at = EXCLUDED.cancel_at, canceled_at = EXCLUDED.canceled_at,
    ended_at = EXCLUDED.ended_at, pause_behavior = EXCLUDED.pause_behavior,
    pause_resumes_at = EXCLUDED.pause_resumes_at,
    latest_invoice = EXCLUDED.latest_invoice, metadata = EXCLUDED.metadata,
    stripe_created = EXCLUDED.stripe_created, event_created = EXCLUDED.event_created,
    discounts = EXCLUDED.discounts, tax_rates = EXCLUDED.tax_rates, updated_at = now()
WHERE s.event_created <= EXCLUDED.event_created
"""
UPSERT_ITEM = """
INSERT INTO subscription_items AS i (id, subscription, price, product, quantity, meter,
    current_period_start, current_period_end, tax_rates, position)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10)
ON CONFLICT (id) DO UPDATE SET
    subscription = EXCLUDED.subscription, price = EXCLUDED.price, product = EXCLUDED.product,
    quantity = EXCLUDED.quantity, meter = EXCLUDED.meter, tax_rates = EXCLUDED.tax_rates,
    position = EXCLUDED.position,
    current_period_start = EXCLUDED.current_period_start,
    current_period_end = EXCLUDED.current_period_end, removed_at = NULL, updated_at = now()
"""
UPSERT_ITEM_PERIOD = """
INSERT INTO subscription_item_periods (item, period_start, period_end, meter, price)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (item, period_start) DO UPDATE SET
    period_end = EXCLUDED.period_end, meter = EXCLUDED.meter, price = EXCLUDED.price
"""
# The item's latest period starting in [$2, $3): the part of Stripe's item period [$2, $3)
# that bills now (a price change inside the period started a later one).
ITEM_PERIOD_NOW = """
SELECT period_start, meter, price FROM subscription_item_periods
WHERE item = $1 AND period_start >= $2 AND period_start < $3
ORDER BY period_start DESC LIMIT 1
"""
# With the row's order guard: only the copy UPSERT_SUBSCRIPTION stored ($3: its event created).
SET_BILLING_MODE = """
UPDATE subscriptions SET billing_mode = $2 WHERE id = $1 AND event_created <= $3
"""
# The item's periods that a period starting at $2 cuts short (started before, end after): they
# end at $2 now, so an item's periods never overlap.
CUT_ITEM_PERIODS_AT = """
UPDATE subscription_item_periods SET period_end = $2
WHERE item = $1 AND period_start < $2 AND period_end > $2
RETURNING period_start
"""
# Items gone from the subscription ($2: the ids still in it) stop billing at $3.
REMOVE_ITEMS = """
UPDATE subscription_items SET removed_at = $3, updated_at = now()
WHERE subscription = $1 AND NOT (id = ANY($2::text[])) AND removed_at IS NULL
RETURNING id
"""
# Usage after a subscription or item ended is not billed under it.
DROP_PERIODS_AFTER = """
DELETE FROM subscription_item_periods WHERE item = ANY($1::text[]) AND period_start >= $2
"""
CUT_PERIODS_AT = """
UPDATE subscription_item_periods SET period_end = $2
WHERE item = ANY($1::text[]) AND period_start < $2 AND period_end > $2
"""
ITEMS_OF = "SELECT id FROM subscription_items WHERE subscription = $1"

# A customer's subscriptions in order of which is "the" plan: live ones first, then the newest.
SUBSCRIPTION_PREFERENCE = """
ORDER BY CASE status WHEN 'active' THEN 0 WHEN 'trialing' THEN 1 WHEN 'past_due' THEN 2
    WHEN 'paused' THEN 3 WHEN 'unpaid' THEN 4 WHEN 'incomplete' THEN 5 ELSE 6 END,
    stripe_created DESC
"""
# The subscription that is "the" plan of a customer.
CURRENT_SUBSCRIPTION_ORDER = SUBSCRIPTION_PREFERENCE + "LIMIT 1\n"
CURRENT_SUBSCRIPTION = f"""
SELECT * FROM subscriptions WHERE customer = $1
{CURRENT_SUBSCRIPTION_ORDER}"""
# The customer's subscriptions in one of the statuses $2 (the live ones), "the" plan first.
SUBSCRIPTIONS_IN = f"""
SELECT id, status FROM subscriptions WHERE customer = $1 AND status = ANY($2::text[])
{SUBSCRIPTION_PREFERENCE}"""
SUBSCRIPTION_ITEMS = """
SELECT i.id, i.price, coalesce(i.product, p.product) AS product, i.quantity, i.meter,
    p.usage_type, p.unit_amount, p.currency, p.nickname, p.lookup_key, p.recurring_interval,
    p.metadata AS price_metadata, pr.name AS product_name, pr.metadata AS product_metadata,
    m.event_name
FROM subscription_items i
LEFT JOIN prices p ON p.id = i.price
LEFT JOIN products pr ON pr.id = coalesce(i.product, p.product)
LEFT JOIN billing_meters m ON m.id = i.meter
WHERE i.subscription = $1 AND i.removed_at IS NULL
ORDER BY i.id
"""

# --- invoices ---------------------------------------------------------------------------------
INVOICE_CREATED = "SELECT event_created FROM invoices WHERE id = $1 FOR UPDATE"
INVOICE_STATUS = "SELECT status FROM invoices WHERE id = $1"
UPSERT_INVOICE = """
INSERT INTO invoices AS v (id, customer, subscription, status, billing_reason, currency, subtotal,
    total, amount_due, amount_paid, amount_remaining, attempt_count, next_payment_attempt,
    period_start, period_end, hosted_invoice_url, stripe_created, event_created)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status, billing_reason = EXCLUDED.billing_reason,
    subtotal = EXCLUDED.subtotal, total = EXCLUDED.total, amount_due = EXCLUDED.amount_due,
    amount_paid = EXCLUDED.amount_paid, amount_remaining = EXCLUDED.amount_remaining,
    attempt_count = EXCLUDED.attempt_count, next_payment_attempt = EXCLUDED.next_payment_attempt,
    period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end,
    hosted_invoice_url = EXCLUDED.hosted_invoice_url, event_created = EXCLUDED.event_created,
    updated_at = now()
WHERE v.event_created <= EXCLUDED.event_created
"""

# --- pending invoice items -------------------------------------------------------------------
# $12: event created. An invoice, once it took the item, is kept (an item never leaves its
# invoice); so is a deletion. An invoice's lines write the row with event created 0, so the
# item's own events (newer) still fill in the rest.
UPSERT_PENDING_ITEM = """
INSERT INTO pending_invoice_items AS p (id, customer, subscription, subscription_item, amount,
    currency, proration, period_start, period_end, invoice, deleted, event_created)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (id) DO UPDATE SET
    customer = EXCLUDED.customer,
    subscription = coalesce(EXCLUDED.subscription, p.subscription),
    subscription_item = coalesce(EXCLUDED.subscription_item, p.subscription_item),
    amount = EXCLUDED.amount, currency = EXCLUDED.currency, proration = EXCLUDED.proration,
    period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end,
    invoice = coalesce(EXCLUDED.invoice, p.invoice), deleted = EXCLUDED.deleted OR p.deleted,
    event_created = greatest(EXCLUDED.event_created, p.event_created), updated_at = now()
WHERE p.event_created <= EXCLUDED.event_created OR EXCLUDED.invoice IS NOT NULL
"""

# --- dunning ----------------------------------------------------------------------------------
RECORD_PAYMENT_FAILURE = """
INSERT INTO payment_failures (event_id, invoice, subscription, customer, attempt_count,
    amount_due, failed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING
"""
# A failure opens dunning; another failure while it is open keeps its start (retries do not
# extend the grace period); a failure older than the last resolution is a late delivery and
# reopens nothing.
START_DUNNING = """
INSERT INTO dunning AS d (subscription, customer, invoice, failed_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (subscription) DO UPDATE SET
    invoice = CASE WHEN d.resolved_at IS NULL THEN d.invoice ELSE EXCLUDED.invoice END,
    failed_at = CASE WHEN d.resolved_at IS NULL THEN least(d.failed_at, EXCLUDED.failed_at)
        ELSE EXCLUDED.failed_at END,
    steps_sent = CASE WHEN d.resolved_at IS NULL THEN d.steps_sent ELSE 0 END,
    restricted_at = CASE WHEN d.resolved_at IS NULL THEN d.restricted_at ELSE NULL END,
    resolved_at = NULL,
    updated_at = now()
WHERE d.resolved_at IS NULL OR EXCLUDED.failed_at > d.resolved_at
"""
# Payment of the failed invoice (or a newer one) ends dunning.
RESOLVE_DUNNING = """
UPDATE dunning SET resolved_at = $3, updated_at = now()
WHERE subscription = $1 AND resolved_at IS NULL AND (invoice = $2 OR failed_at <= $3)
RETURNING subscription
"""
OPEN_DUNNING = """
SELECT d.subscription, d.customer, d.invoice, d.failed_at, d.steps_sent, d.restricted_at,
    s.status, c.tenant, c.external_id
FROM dunning d
JOIN subscriptions s ON s.id = d.subscription
LEFT JOIN customers c ON c.stripe_id = d.customer
WHERE d.resolved_at IS NULL
ORDER BY d.failed_at
FOR UPDATE OF d SKIP LOCKED
"""
ADVANCE_DUNNING = """
UPDATE dunning SET steps_sent = $2, restricted_at = coalesce(restricted_at, $3), updated_at = now()
WHERE subscription = $1
"""
DUNNING_OF = "SELECT * FROM dunning WHERE subscription = $1"

# --- meter error reports ----------------------------------------------------------------------
RECORD_METER_ERROR = """
INSERT INTO meter_error_reports (event_id, meter, error_code, error_count, message, report)
VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (event_id) DO NOTHING
"""

# --- attribution ------------------------------------------------------------------------------
# Every (item, period) of these customer keys (our external id or the cus_ id) with the meter's
# event name; the customer column is the key as the events spell it.
ITEM_PERIODS = """
SELECT k.key AS customer, m.event_name AS meter, p.item, p.period_start, p.period_end
FROM unnest($2::text[]) AS k(key)
JOIN customers c ON c.tenant = $1 AND (c.external_id = k.key OR c.stripe_id = k.key)
JOIN subscriptions s ON s.customer = c.stripe_id
JOIN subscription_items i ON i.subscription = s.id
JOIN subscription_item_periods p ON p.item = i.id
JOIN billing_meters m ON m.id = p.meter
"""

# --- entitlements / metrics -------------------------------------------------------------------
# A meter's usage in a billing period, as rows of every aggregation's state that the caller folds
# with the usage API's Tally before taking the meter's aggregation (a max meter's period is the
# max of its hours, not their sum): the running totals (migrations/0007_usage_totals.sql) of the
# item periods starting in [$4, $5), and the unattributed buckets of those hours (usage no item
# bills, e.g. a limit on a meter the plan does not price), which have no total.
USAGE_IN_PERIOD = """
SELECT t.event_count, t.value_sum, t.value_max, t.unique_count, t.last_value, t.last_at,
    t.last_event_id
FROM usage_totals t
WHERE t.tenant = $1 AND t.customer = ANY($2::text[]) AND t.meter = $3
  AND t.period_start >= $4 AND t.period_start < $5
UNION ALL
SELECT r.event_count, r.value_sum, r.value_max, r.unique_count, r.last_value, r.last_at,
    r.last_event_id
FROM usage_rollups r
WHERE r.tenant = $1 AND r.customer = ANY($2::text[]) AND r.meter = $3
  AND r.subscription_item IS NULL AND r.bucket_start >= $4 AND r.bucket_start < $5
"""
# The rule of usage_rollup_values (migrations/0012_meter_formulas.sql): the tenant's local
# definition, else the Stripe meter's formula, else sum.
METER_AGGREGATION = """
SELECT coalesce(
    (SELECT aggregation FROM meter_definitions WHERE tenant = $1 AND meter = $2),
    (SELECT aggregation FROM stripe_meter_formulas WHERE meter = $2),
    'sum')
"""
SUBSCRIPTIONS_BY_STATUS = "SELECT status, count(*) AS n FROM subscriptions GROUP BY status"
# Recurring items of live subscriptions with their prices; MRR is priced in Python (mrr.py).
MRR_ITEMS = """
SELECT s.id AS subscription, c.tenant, c.external_id, c.stripe_id, s.current_period_start,
    s.current_period_end, i.quantity, p.id AS price, p.currency, p.billing_scheme, p.unit_amount,
    p.unit_amount_decimal, p.tiers_mode, p.tiers, p.transform_quantity, p.recurring_interval,
    p.recurring_interval_count, p.usage_type, m.event_name
FROM subscriptions s
JOIN subscription_items i ON i.subscription = s.id AND i.removed_at IS NULL
JOIN prices p ON p.id = i.price
LEFT JOIN customers c ON c.stripe_id = s.customer
LEFT JOIN billing_meters m ON m.id = i.meter
WHERE s.status IN ('active', 'past_due')
"""
INVOICE_OUTCOMES = """
SELECT count(*) FILTER (WHERE status = 'paid' AND attempt_count > 0) AS paid,
    count(*) FILTER (WHERE attempt_count > 0) AS attempted
FROM invoices
"""
OPEN_DUNNING_COUNTS = """
SELECT count(*) FILTER (WHERE restricted_at IS NULL) AS grace,
    count(*) FILTER (WHERE restricted_at IS NOT NULL) AS restricted
FROM dunning WHERE resolved_at IS NULL
"""

# --- sync -------------------------------------------------------------------------------------
SYNC_CURSOR = "SELECT cursor FROM billing_sync_cursors WHERE resource = $1"
SAVE_SYNC_CURSOR = """
INSERT INTO billing_sync_cursors (resource, cursor) VALUES ($1, $2)
ON CONFLICT (resource) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()
"""

# Our ids or cus_ ids → Stripe ids, live customers only: the reporter's customer directory, and
# strict mode's known customers (meter/ingest/strict.py).
STRIPE_IDS_OF_CUSTOMERS = """
SELECT external_id, stripe_id FROM customers
WHERE tenant = $1 AND NOT deleted AND (external_id = ANY($2::text[]) OR stripe_id = ANY($2::text[]))
"""

# `meter sync`: each price mapping (migrations/0018_dimensions.sql) with whether Stripe has what
# it needs: an active sum meter of its event name, and a price on that meter.
MAPPINGS_STRIPE_SIDE = """
SELECT m.tenant, m.meter, m.filter::text AS filter, m.event_name, m.price,
    EXISTS (SELECT 1 FROM billing_meters b WHERE b.event_name = m.event_name
            AND b.status = 'active' AND b.formula = 'sum') AS has_meter,
    EXISTS (SELECT 1 FROM prices p JOIN billing_meters b ON b.id = p.meter
            WHERE b.event_name = m.event_name AND p.active) AS has_price
FROM meter_price_mappings m
ORDER BY m.tenant, m.meter, m.filter::text
"""
