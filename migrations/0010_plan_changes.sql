-- Tell the usage API's plan caches (meter/usage/store.py PlanCache) when a plan changes.
--
-- A usage request needs the customer's plan: the customer, its current subscription and items,
-- their prices and meters. Each serve process caches it and LISTENs on `meter_plans`; every
-- write to those tables notifies at commit (NOTIFY is transactional: nothing is sent for a
-- rolled-back write, and a cache never drops an entry before the change is visible). Payload:
-- the customer's Stripe id when one customer's plan changed, '*' when a shared row (a price, a
-- meter, a meter definition) changed and every plan may have. Postgres folds identical
-- notifications of one transaction into one.
CREATE FUNCTION meter_notify_plan_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    row_data record := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    customer text;
BEGIN
    IF TG_TABLE_NAME = 'customers' THEN
        customer := row_data.stripe_id;
    ELSIF TG_TABLE_NAME = 'subscriptions' THEN
        customer := row_data.customer;
        IF TG_OP = 'UPDATE' AND OLD.customer IS DISTINCT FROM NEW.customer THEN
            PERFORM pg_notify('meter_plans', OLD.customer);
        END IF;
    ELSIF TG_TABLE_NAME = 'subscription_items' THEN
        SELECT s.customer INTO customer FROM subscriptions s WHERE s.id = row_data.subscription;
        customer := coalesce(customer, '*');  -- an item of a subscription not synced yet
    ELSE
        customer := '*';
    END IF;
    PERFORM pg_notify('meter_plans', customer);
    RETURN NULL;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customers', 'subscriptions', 'subscription_items', 'prices',
                             'billing_meters', 'meter_definitions'] LOOP
        EXECUTE format(
            'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %I'
            ' FOR EACH ROW EXECUTE FUNCTION meter_notify_plan_change()',
            t || '_plan_change', t
        );
    END LOOP;
END
$$;
