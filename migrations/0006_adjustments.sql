-- What turns a subscription's priced lines into its invoice total, beyond the prices: its
-- discounts and its tax rates, synced with it (see meter/billing/store.py and convert.py).
--
-- discounts: Stripe's Discount objects reduced to what pricing needs: [{"id", "start", "end",
-- "coupon": {"id", "percent_off", "amount_off", "currency", "duration",
-- "duration_in_months"}}]. A coupon's terms and a discount's dates are immutable in Stripe, so a
-- copy keyed by discount id never goes stale; the list itself follows the subscription's
-- `discounts` at each event.
--
-- tax_rates: manual TaxRate objects reduced to [{"id", "percentage", "inclusive",
-- "display_name"}] — the subscription's `default_tax_rates`, and an item's own `tax_rates`, which
-- replace the defaults on that item's lines. Stripe embeds them whole in every subscription
-- payload, and a rate's percentage and inclusiveness never change.
ALTER TABLE subscriptions ADD COLUMN discounts jsonb NOT NULL DEFAULT '[]';
ALTER TABLE subscriptions ADD COLUMN tax_rates jsonb NOT NULL DEFAULT '[]';
ALTER TABLE subscription_items ADD COLUMN tax_rates jsonb NOT NULL DEFAULT '[]';
