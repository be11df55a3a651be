-- Billing: a deleted Stripe customer gives up our customer id.
--
-- Stripe customers cannot be undeleted (https://docs.stripe.com/api/customers/delete): a customer
-- of ours who comes back gets a new Stripe customer, which must take over the same id. The
-- deleted row keeps its id, so its past subscriptions' usage stays attributed to them; only one
-- live (not deleted) Stripe customer holds an id of a tenant at a time.
ALTER TABLE customers DROP CONSTRAINT customers_tenant_external_id_key;
CREATE UNIQUE INDEX customers_live_external_id ON customers (tenant, external_id) WHERE NOT deleted;
CREATE INDEX customers_external_id ON customers (tenant, external_id);
