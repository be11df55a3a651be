-- Reporter: the whole second of an absolute unit's latest outbox row, kept with its mark.
--
-- Stripe's `last` formula keeps the value of the latest event; which of two events of the same
-- second it keeps is not documented. Each new version of a max/last/unique_count period is
-- therefore stamped at least one second after the previous one (reporter/plan.py
-- `version_time`), which needs the previous row's second: `event_time` (NULL for bucket units,
-- and for a period with no row yet).
ALTER TABLE report_marks ADD COLUMN event_time timestamptz;

-- Periods reported before this column existed: their latest row's second (floored, as sent).
UPDATE report_marks m
SET event_time = (
    SELECT date_trunc('second', max(o.event_time))
    FROM report_outbox o
    WHERE o.absolute AND o.tenant = m.tenant AND o.customer = m.customer AND o.meter = m.meter
      AND o.subscription_item = m.subscription_item AND o.period_start = m.unit_start
)
WHERE m.unit = 'period';
