-- The discounts (coupons) applied to each subscription, as Stripe's Discount objects reduced to
-- what pricing needs: [{"id", "start", "end", "coupon": {"id", "percent_off", "amount_off",
-- "currency", "duration", "duration_in_months"}}]. A coupon's terms and a discount's dates are
-- immutable in Stripe, so a copy keyed by discount id never goes stale; the list itself follows
-- the subscription's `discounts` at each event (see meter/billing/store.py).
ALTER TABLE subscriptions ADD COLUMN discounts jsonb NOT NULL DEFAULT '[]';
