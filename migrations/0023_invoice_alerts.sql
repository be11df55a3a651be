-- Alert rules on the whole invoice (docs/alerts.md): an `amount` rule without a meter measures
-- the customer's upcoming invoice total so far. Every other kind still names a meter, and a
-- meter-less rule never blocks (a hard limit blocks one meter).
ALTER TABLE alert_rules ALTER COLUMN meter DROP NOT NULL;
ALTER TABLE alert_rules ADD CONSTRAINT alert_rules_meter_or_invoice
    CHECK (meter IS NOT NULL OR (kind = 'amount' AND NOT hard_limit));
