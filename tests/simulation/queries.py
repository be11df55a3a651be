"""The billing simulation's SQL (test setup and read-only checks)."""

from __future__ import annotations

# Local meter definitions (what `meter` aggregates by, per tenant); a Stripe meter's formula is
# synced by billing and is not written here.
# Dimensions of a meter from $3 on (migrations/0018_dimensions.sql).
SET_DIMENSIONS = """
INSERT INTO meter_dimensions (tenant, meter, effective_from, keys) VALUES ($1, $2, $3, $4)
"""
DEFINE_METER = """
INSERT INTO meter_definitions (tenant, meter, aggregation, unique_property)
VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant, meter) DO UPDATE
SET aggregation = EXCLUDED.aggregation, unique_property = EXCLUDED.unique_property,
    source = 'local'
"""

PENDING_OUTBOX = "SELECT count(*) FROM report_outbox WHERE status = 'pending'"

STUCK_OUTBOX = """
SELECT identifier, tenant, customer, meter, status, value, event_time, carried_from, last_error
FROM report_outbox WHERE status IN ('review', 'failed') ORDER BY id
"""

# Synced by billing from the invoice webhooks: the reporter's view of what is finalized.
INVOICE_STATUS = "SELECT status FROM invoices WHERE id = $1"

ITEM_PERIODS = """
SELECT count(*) FROM subscription_item_periods p JOIN subscription_items i ON i.id = p.item
WHERE i.subscription = $1 AND p.period_start = $2
"""
