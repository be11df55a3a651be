-- Reporter: an absolute meter's unit (max, last, unique_count) is the customer's billing period
-- over every item billing the meter, with item '' in its mark (reporter/queries.py GROWN_PERIODS):
-- a Stripe meter event names no item, so Stripe keeps one `last` value per customer and meter.
--
-- Periods reported per item before: the customer's unit starts from the version Stripe holds,
-- the value and second of the latest row sent for any of its items, at version 0 so that the
-- next build plans it again. Its next version is stamped after that second (reporter/plan.py
-- version_time), and a union equal to the value Stripe holds sends nothing.
INSERT INTO report_marks
    (tenant, customer, meter, subscription_item, unit, unit_start, version, value, event_time,
     dims)
SELECT DISTINCT ON (tenant, customer, meter, unit_start)
       tenant, customer, meter, '', 'period', unit_start, 0, value, event_time, ''
FROM report_marks
WHERE unit = 'period' AND subscription_item <> ''
ORDER BY tenant, customer, meter, unit_start, event_time DESC NULLS LAST
ON CONFLICT DO NOTHING;
