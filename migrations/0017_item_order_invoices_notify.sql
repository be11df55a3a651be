-- Two things the usage API's projected invoice needs to equal Stripe's, to the cent.
--
-- 1. An item's place in its subscription's `items` list: an invoice's lines follow it, and where
--    the shares of an invoice discount tie, the remaining cent goes to the first line (so a cent
--    of tax can move with the order). Null for rows synced before this column existed: they sort
--    after the others, by id, until the subscription's next event.
ALTER TABLE subscription_items ADD COLUMN position integer;

-- 2. Invoices tell the plan caches (migrations/0010_plan_changes.sql) about their customer: a
--    `once` coupon is used up by the subscription's first invoice with a positive subtotal, and
--    Stripe then removes the discount without necessarily changing the subscription first. The
--    notification is the one pending invoice items send (0016): the row's customer.
CREATE TRIGGER invoices_plan_change AFTER INSERT OR UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION meter_notify_pending_item();
