"""SQL of the alert rules API (tables: migrations/0022_alert_rules.sql). Every statement names
the tenant: a rule, its states and its firings are only ever found through their tenant."""

from __future__ import annotations

RULE_COLUMNS = (
    "id, tenant, customer, meter, filter::text AS filter, kind, thresholds, hard_limit, "
    "created_at, updated_at"
)

COUNT_RULES = "SELECT count(*) FROM alert_rules WHERE tenant = $1"

INSERT_RULE = f"""
INSERT INTO alert_rules (id, tenant, customer, meter, kind, thresholds, hard_limit, filter)
VALUES ($1, $2, $3, $4, $5, $6::numeric[], $7, $8::jsonb)
RETURNING {RULE_COLUMNS}
"""

# Oldest first, from after the `starting_after` rule ($2) when given; $3 NULL: every one.
LIST_RULES = f"""
SELECT {RULE_COLUMNS} FROM alert_rules
WHERE tenant = $1
  AND ($2::text IS NULL OR (created_at, id) > (
      SELECT created_at, id FROM alert_rules WHERE tenant = $1 AND id = $2))
ORDER BY created_at, id
LIMIT $3
"""

GET_RULE = f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE tenant = $1 AND id = $2"
# The same, locked for an update that checks the row first (NO KEY: an evaluation holding the
# rule FOR KEY SHARE does not hold it up).
GET_RULE_FOR_UPDATE = GET_RULE + " FOR NO KEY UPDATE"

UPDATE_RULE = f"""
UPDATE alert_rules SET thresholds = $3::numeric[], hard_limit = $4, updated_at = now()
WHERE tenant = $1 AND id = $2
RETURNING {RULE_COLUMNS}
"""

DELETE_RULE = "DELETE FROM alert_rules WHERE tenant = $1 AND id = $2 RETURNING meter"

# The blocks a rule holds (read only: alert_limits is the evaluator's), for the delete to lift at
# once; the evaluator clears them and enqueues their usage.limit_cleared (evaluator/worker.py).
STANDING_LIMITS_OF_RULE = """
SELECT keys, meter, period_end FROM alert_limits
WHERE tenant = $1 AND rule = $2 AND cleared_at IS NULL AND period_end > now()
"""

STATES = """
SELECT s.customer, s.period_start, s.period_end, s.value, s.evaluated_at,
    coalesce(
        (SELECT array_agg(f.threshold ORDER BY f.threshold) FROM alert_firings f
         WHERE f.rule = s.rule AND f.customer = s.customer AND f.period_start = s.period_start),
        '{}') AS thresholds,
    coalesce(
        (SELECT array_agg(f.fired_at ORDER BY f.threshold) FROM alert_firings f
         WHERE f.rule = s.rule AND f.customer = s.customer AND f.period_start = s.period_start),
        '{}') AS fired_at,
    EXISTS (SELECT 1 FROM alert_limits l
            WHERE l.rule = s.rule AND l.customer = s.customer
              AND l.period_start = s.period_start AND l.cleared_at IS NULL) AS blocked
FROM alert_states s
WHERE s.tenant = $1 AND s.rule = $2 AND ($3::text IS NULL OR s.customer = $3)
ORDER BY s.period_start DESC, s.customer
LIMIT $4
"""
