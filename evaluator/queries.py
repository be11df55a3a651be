"""SQL of the evaluator. It owns alert_firings, alert_states and alert_limits
(migrations/0022_alert_rules.sql) and reads alert_rules, usage and billing."""

from __future__ import annotations

RULE_COLUMNS = "id, tenant, customer, meter, filter::text AS filter, kind, thresholds, hard_limit"

# The rules a touch of (tenant, meter) by one of the customer's keys concerns: those of the
# meter, and those of the whole invoice (no meter), which any meter's usage may move.
RULES_FOR_CUSTOMER = f"""
SELECT {RULE_COLUMNS} FROM alert_rules
WHERE tenant = $1 AND (meter = ANY($2::text[]) OR meter IS NULL)
  AND (customer IS NULL OR customer = ANY($3::text[]))
ORDER BY id
"""

ALL_RULES = f"SELECT {RULE_COLUMNS} FROM alert_rules ORDER BY tenant, id"

# The customers a rule for every customer may concern: those with usage of its meter (`$2`; NULL,
# a rule on the whole invoice: of any meter) since the earliest start of a current period (`$3`
# of an item's, `$5` of a calendar month), those whose block it still holds (a new period without
# usage must still clear them), and for a rule on the whole invoice every customer with a live
# subscription (`$6`, billing.rules.LIVE_STATUSES): licensed fees alone make an invoice.
CUSTOMERS_OF_METER = """
SELECT customer FROM usage_totals
WHERE tenant = $1 AND ($2::text IS NULL OR meter = $2) AND period_start >= $3
UNION
SELECT customer FROM usage_rollups
WHERE tenant = $1 AND ($2::text IS NULL OR meter = $2) AND subscription_item IS NULL
  AND bucket_start >= $5
UNION
SELECT customer FROM alert_limits WHERE rule = $4 AND cleared_at IS NULL
UNION
SELECT c.external_id FROM customers c JOIN subscriptions s ON s.customer = c.stripe_id
WHERE $2::text IS NULL AND c.tenant = $1 AND s.status = ANY($6::text[])
"""

# 1. The claim: the unique key (rule, customer, period start, threshold) admits one row, so one
#    transaction of all the evaluators that see the crossing inserts it; the others wait for it
#    to commit and insert nothing.
CLAIM_FIRING = """
INSERT INTO alert_firings (rule, tenant, customer, period_start, period_end, threshold, value,
    event)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT DO NOTHING
RETURNING rule
"""

FIRED = """
SELECT threshold FROM alert_firings WHERE rule = $1 AND customer = $2 AND period_start = $3
"""

SAVE_STATE = """
INSERT INTO alert_states (rule, tenant, customer, period_start, period_end, value, evaluated_at)
VALUES ($1, $2, $3, $4, $5, $6, now())
ON CONFLICT (rule, customer, period_start)
DO UPDATE SET value = excluded.value, period_end = excluded.period_end, evaluated_at = now()
"""

CLAIM_LIMIT = """
INSERT INTO alert_limits (rule, tenant, customer, keys, meter, period_start, period_end)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT DO NOTHING
RETURNING rule
"""

# The limits of earlier periods still standing: a new period clears them. `$2` is every key of
# the customer: a limit recorded under another of its names (usage sent under the `cus_` id
# before the billing sync linked it to our id) is cleared too.
CLEAR_EARLIER_LIMITS = """
UPDATE alert_limits SET cleared_at = now()
WHERE rule = $1 AND customer = ANY($2::text[]) AND period_start < $3 AND cleared_at IS NULL
RETURNING customer, keys, meter, period_start, period_end
"""

# The rule as it stands, locked against its delete until this evaluation commits: a
# rule deleted meanwhile is not evaluated (it never claims a limit again), and its hard_limit
# is read fresh.
# FOR KEY SHARE: it holds off the delete only, not an update (nor the other evaluators).
LOCK_RULE = "SELECT hard_limit FROM alert_rules WHERE id = $1 FOR KEY SHARE"

# The rule's hard limit turned off: the customer's standing limits (under any of its keys) are
# cleared.
CLEAR_STANDING_LIMITS = """
UPDATE alert_limits SET cleared_at = now()
WHERE rule = $1 AND customer = ANY($2::text[]) AND cleared_at IS NULL
RETURNING customer, keys, meter, period_start, period_end
"""

# Limits a deleted rule still held (alert_rules has no row for it): cleared by the sweep. A
# deleted rule claims no limit after its delete commits (LOCK_RULE), so this clears each once.
CLEAR_LIMITS_OF_DELETED_RULES = """
UPDATE alert_limits l SET cleared_at = now()
WHERE l.cleared_at IS NULL AND NOT EXISTS (SELECT 1 FROM alert_rules r WHERE r.id = l.rule)
RETURNING tenant, rule, customer, keys, meter, period_start, period_end
"""

# Cleared limits whose period has not ended: their Redis lift is applied again each sweep, so a
# lift lost (a crash after the commit, Redis unavailable, a late block) holds within a sweep.
LIFTS_IN_FORCE = """
SELECT tenant, rule, keys, meter, period_end FROM alert_limits
WHERE cleared_at IS NOT NULL AND period_end > now()
"""

STANDING_LIMIT = """
SELECT keys, meter, period_end FROM alert_limits
WHERE rule = $1 AND customer = $2 AND period_start = $3 AND cleared_at IS NULL
"""

# A meter's usage of a customer in the trailing window [$4, $5) (pricing.trailing_window), for
# the run-rate projection: whole hourly buckets, attributed or not.
RECENT_USAGE = """
SELECT coalesce(sum(r.event_count), 0)::bigint AS recent_count,
    coalesce(sum(r.value_sum), 0) AS recent_sum
FROM usage_rollups r
WHERE r.tenant = $1 AND r.customer = ANY($2::text[]) AND r.meter = $3
  AND r.bucket_start >= $4 AND r.bucket_start < $5
"""
