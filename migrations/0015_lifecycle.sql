-- Billing: a deleted Stripe customer gives up our customer id; reporter: usage of an inactive
-- Stripe meter waits.
--
-- Stripe customers cannot be undeleted (https://docs.stripe.com/api/customers/delete): a customer
-- of ours who comes back gets a new Stripe customer, which must take over the same id. The
-- deleted row keeps its id, so its past subscriptions' usage stays attributed to them; only one
-- live (not deleted) Stripe customer holds an id of a tenant at a time.
ALTER TABLE customers DROP CONSTRAINT customers_tenant_external_id_key;
CREATE UNIQUE INDEX customers_live_external_id ON customers (tenant, external_id) WHERE NOT deleted;
CREATE INDEX customers_external_id ON customers (tenant, external_id);

-- Reporter: usage of a deactivated Stripe meter waits.
--
-- "When a meter is deactivated, no more meter events will be accepted for this meter"
-- (https://docs.stripe.com/api/billing/meter/deactivate): Stripe still answers 200 and reports
-- the event later as an `archived_meter` error, so a sent row would be lost. Usage of an event
-- name whose Stripe meter is inactive waits, like a count meter's (migrations/0012), in the
-- rollups or, already planned, as pending outbox rows the sender does not claim, until the
-- meter is reactivated (or an active meter with that event name exists). `sendable` is the one
-- rule of which event names usage is sent to: a reportable formula and an active meter.
CREATE OR REPLACE VIEW stripe_meter_formulas AS
SELECT DISTINCT ON (event_name)
    event_name AS meter,
    id AS stripe_meter,
    formula,
    reportable,
    CASE WHEN reportable THEN formula END AS aggregation,
    reportable AND status = 'active' AS sendable
FROM billing_meters
ORDER BY event_name, status = 'active' DESC, event_created DESC, id;
