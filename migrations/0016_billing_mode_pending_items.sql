-- Plan changes inside a billing period, as Stripe bills them.
--
-- A subscription's billing mode (Stripe's `billing_mode.type`) decides what a metered price
-- taken off an item mid-period bills: in `flexible` mode its usage reported so far, at once, as
-- an invoice item; in `classic` mode nothing. Either way the new price bills usage from the
-- change on (docs.stripe.com/billing/subscriptions/usage-based/manage-billing-setup). A
-- subscription synced before this column existed, or by an API version without billing modes,
-- is classic (Stripe's behaviour before billing modes).
ALTER TABLE subscriptions ADD COLUMN billing_mode text NOT NULL DEFAULT 'classic'
    CHECK (billing_mode IN ('classic', 'flexible'));

-- The price each period of an item bills. A price change inside a period ends the item's
-- period at the change and starts one with the new price there (meter/billing/store.py), so
-- usage before the change is never priced at the new price. Null: recorded before this column.
ALTER TABLE subscription_item_periods ADD COLUMN price text;

-- Invoice items of a subscription that no invoice has taken yet (Stripe's pending invoice
-- items, `invoiceitem.*` webhooks): the prorations of a change and a flexible mode's metered
-- usage up to a price change. The next invoice of the subscription bills them; `invoice` is set
-- once an invoice took the item, `deleted` once Stripe deleted it.
CREATE TABLE pending_invoice_items (
    id                 text        PRIMARY KEY,
    customer           text        NOT NULL,
    subscription       text,
    subscription_item  text,
    amount             bigint      NOT NULL,
    currency           text        NOT NULL,
    proration          boolean     NOT NULL,
    period_start       timestamptz,
    period_end         timestamptz,
    invoice            text,
    deleted            boolean     NOT NULL DEFAULT false,
    event_created      bigint      NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX pending_invoice_items_open ON pending_invoice_items (subscription)
    WHERE invoice IS NULL AND NOT deleted;

-- The usage API's plan caches hold a subscription's pending items: a write names its customer
-- (see migrations/0010_plan_changes.sql).
CREATE FUNCTION meter_notify_pending_item() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('meter_plans',
        CASE WHEN TG_OP = 'DELETE' THEN OLD.customer ELSE NEW.customer END);
    RETURN NULL;
END
$$;

CREATE TRIGGER pending_invoice_items_plan_change
    AFTER INSERT OR UPDATE OR DELETE ON pending_invoice_items
    FOR EACH ROW EXECUTE FUNCTION meter_notify_pending_item();
