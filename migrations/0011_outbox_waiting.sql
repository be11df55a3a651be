-- Reporter outbox: usage that waits for an open billing period, and carried usage by period.
--
-- status `waiting`: delta usage of a period whose invoice may be final (reporter/periods.py),
-- whose subscription item has no open period known yet to carry it into. Never sent as it is;
-- the build makes it `pending` again once the item has an open period, and the sender moves it
-- there (reporter/send.py).
ALTER TABLE report_outbox DROP CONSTRAINT report_outbox_status_check;
ALTER TABLE report_outbox ADD CONSTRAINT report_outbox_status_check
    CHECK (status IN ('pending', 'sent', 'failed', 'review', 'late', 'waiting'));

CREATE INDEX report_outbox_waiting ON report_outbox (subscription_item) WHERE status = 'waiting';

-- The usage API (meter/usage/queries.py ITEM_SNAPSHOT) shows carried (and waiting) rows in the
-- period whose invoice bills them, not in the one they came from: both lookups, on those rows.
CREATE INDEX report_outbox_carried_from ON report_outbox
    (tenant, customer, subscription_item, period_start)
    WHERE carried_from IS NOT NULL OR status = 'waiting';
CREATE INDEX report_outbox_carried_into ON report_outbox
    (tenant, customer, subscription_item, event_time) WHERE carried_from IS NOT NULL;
