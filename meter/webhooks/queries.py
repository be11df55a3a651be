"""Every statement on the outgoing webhooks' tables (migrations/0020_webhook_events.sql,
0021_webhook_deliveries.sql). Their owners run the writes: meter/webhooks/events.py for
webhook_events, meter/webhooks/store.py for every other one; the API, `meter webhooks` and the
notifier call those.

Times are parameters, not now(): the caller's clock decides, so tests can move it. Leases are
the exception: they keep notifiers on different hosts apart, so they are taken and compared on
Postgres's clock alone, and a host's clock skew cannot shorten one."""

from __future__ import annotations

# An event is enqueued once: a retry of the same announcement finds its row and adds nothing.
ENQUEUE_EVENT = """
INSERT INTO webhook_events (id, tenant, type, data)
VALUES ($1, $2, $3, $4::jsonb)
ON CONFLICT (id) DO NOTHING
"""

# Endpoints (meter/webhooks/routes.py, `meter webhooks`). Every statement names the tenant: an
# endpoint of another tenant is not found, never forbidden.
_ENDPOINT_COLUMNS = "id, tenant, url, enabled_events, status, disabled_reason, created_at"

INSERT_ENDPOINT = f"""
INSERT INTO webhook_endpoints (id, tenant, url, enabled_events, created_at)
VALUES ($1, $2, $3, $4, $5)
RETURNING {_ENDPOINT_COLUMNS}
"""

INSERT_SECRET = """
INSERT INTO webhook_endpoint_secrets (endpoint_id, secret, created_at) VALUES ($1, $2, $3)
"""

GET_ENDPOINT = f"""
SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant = $1 AND id = $2
"""

# Rotation holds the endpoint, so two rotations at once leave one current secret.
LOCK_ENDPOINT = f"""
SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant = $1 AND id = $2 FOR UPDATE
"""

# Newest first, from after the `starting_after` endpoint when given (Stripe's pagination).
LIST_ENDPOINTS = f"""
SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints
WHERE tenant = $1
  AND ($2::text IS NULL OR (created_at, id) < (
      SELECT created_at, id FROM webhook_endpoints WHERE tenant = $1 AND id = $2))
ORDER BY created_at DESC, id DESC
LIMIT $3
"""

# Every tenant's endpoints (`meter webhooks list` without --tenant).
LIST_ALL_ENDPOINTS = f"""
SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints
WHERE $1::text IS NULL OR tenant = $1
ORDER BY tenant, created_at, id
"""

# NULL keeps a field as it is. Enabling clears the failure streak, so an endpoint re-enabled
# after being disabled for failing gets the full grace again.
UPDATE_ENDPOINT = f"""
UPDATE webhook_endpoints SET
    url = coalesce($3, url),
    enabled_events = coalesce($4, enabled_events),
    status = CASE WHEN $5::boolean IS NULL THEN status
                  WHEN $5 THEN 'disabled' ELSE 'enabled' END,
    disabled_reason = CASE WHEN $5::boolean IS NULL THEN disabled_reason
                           WHEN $5 THEN coalesce($6, disabled_reason) ELSE NULL END,
    failing_since = CASE WHEN $5::boolean IS FALSE THEN NULL ELSE failing_since END,
    consecutive_failures = CASE WHEN $5::boolean IS FALSE THEN 0 ELSE consecutive_failures END
WHERE tenant = $1 AND id = $2
RETURNING {_ENDPOINT_COLUMNS}
"""

DELETE_ENDPOINT = "DELETE FROM webhook_endpoints WHERE tenant = $1 AND id = $2"

# Rotation: the current secret (no expiry) gets one, the new one becomes current. A secret
# already set to expire keeps its earlier expiry.
EXPIRE_CURRENT_SECRET = """
UPDATE webhook_endpoint_secrets SET expires_at = $2
WHERE endpoint_id = $1 AND expires_at IS NULL
"""

# The secrets that sign at `$2`, newest first; expired ones go with the same statement's caller.
ACTIVE_SECRETS = """
SELECT secret, expires_at FROM webhook_endpoint_secrets
WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > $2)
ORDER BY created_at DESC, secret
"""

DROP_EXPIRED_SECRETS = """
DELETE FROM webhook_endpoint_secrets WHERE endpoint_id = $1 AND expires_at <= $2
"""

# An endpoint's deliveries, newest first, with their attempts as a JSON array.
LIST_DELIVERIES = """
SELECT d.id, d.event_id, e.type AS event_type, e.created_at AS event_created, d.endpoint_id,
       d.status, d.attempts, d.next_attempt_at, d.created_at, d.delivered_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'attempt', a.attempt,
                    'started', extract(epoch FROM a.started_at)::bigint,
                    'finished', extract(epoch FROM a.finished_at)::bigint,
                    'status_code', a.status_code,
                    'error', a.error) ORDER BY a.attempt)
                 FROM webhook_delivery_attempts a WHERE a.delivery_id = d.id),
                '[]'::jsonb)::text AS attempt_log
FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
WHERE d.tenant = $1 AND d.endpoint_id = $2 AND ($3::text IS NULL OR d.id = $3)
  AND ($4::text IS NULL OR d.status = $4)
ORDER BY d.created_at DESC, d.id DESC
LIMIT $5
"""

# Manual redelivery: due now, with a fresh retry window; a claimed attempt in flight keeps its
# lease, so the row is never sent twice at once.
REDELIVER = """
UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $4, retry_from = $4,
    delivered_at = NULL
WHERE tenant = $1 AND endpoint_id = $2 AND id = $3
"""


# The notifier's steps (notifier/worker.py).

# Step 1, fan-out: events not fanned out yet, oldest first, each locked by one notifier for the
# transaction (others skip it rather than wait). An event whose transaction has not committed
# is not seen yet: a later round takes it (migrations/0024_webhook_fanout_mark.sql).
TAKE_NOT_FANNED_OUT = """
SELECT id FROM webhook_events WHERE NOT fanned_out ORDER BY seq LIMIT $1
FOR NO KEY UPDATE SKIP LOCKED
"""

# One delivery per (event, endpoint of its tenant enabled now and subscribed to its type); a
# fan-out repeated after a crash adds nothing.
FAN_OUT = """
INSERT INTO webhook_deliveries
    (id, event_id, endpoint_id, tenant, next_attempt_at, created_at, retry_from)
SELECT 'whd_' || replace(gen_random_uuid()::text, '-', ''), e.id, ep.id, e.tenant, $2, $2, $2
FROM webhook_events e
JOIN webhook_endpoints ep ON ep.tenant = e.tenant AND ep.status = 'enabled'
    AND (e.type = ANY (ep.enabled_events) OR '*' = ANY (ep.enabled_events))
WHERE e.id = ANY ($1::text[])
ON CONFLICT (event_id, endpoint_id) DO NOTHING
"""

MARK_FANNED_OUT = "UPDATE webhook_events SET fanned_out = true WHERE id = ANY ($1::text[])"

# Step 2, claim: due deliveries of enabled endpoints, each by one notifier (SKIP LOCKED), leased
# for `$3` seconds of Postgres's clock (a crashed notifier's lease runs out and the row is due
# again). The attempt
# number taken here fences the outcome recorded in step 4. With what sending needs: the event,
# the URL and the secrets signing at `$1`.
CLAIM = """
WITH claimed AS (
    UPDATE webhook_deliveries d
    SET attempts = d.attempts + 1, lease_until = now() + $3::float8 * interval '1 second'
    FROM (
        SELECT d2.id FROM webhook_deliveries d2
        JOIN webhook_endpoints ep ON ep.id = d2.endpoint_id AND ep.status = 'enabled'
        WHERE d2.status = 'pending' AND d2.next_attempt_at <= $1
          AND (d2.lease_until IS NULL OR d2.lease_until <= now())
        ORDER BY d2.next_attempt_at
        LIMIT $2
        FOR UPDATE OF d2 SKIP LOCKED
    ) due
    WHERE d.id = due.id
    RETURNING d.id, d.attempts, d.event_id, d.endpoint_id, d.retry_from
)
SELECT c.id, c.attempts, c.endpoint_id, c.retry_from, e.id AS event_id, e.tenant, e.type,
       e.data::text AS data, e.created_at AS event_created, ep.url,
       array(SELECT s.secret FROM webhook_endpoint_secrets s
             WHERE s.endpoint_id = ep.id AND (s.expires_at IS NULL OR s.expires_at > $1)
             ORDER BY s.created_at DESC, s.secret) AS secrets
FROM claimed c
JOIN webhook_events e ON e.id = c.event_id
JOIN webhook_endpoints ep ON ep.id = c.endpoint_id
"""

# Step 4, record (one transaction). The attempt's line in the log; nothing when the delivery
# is gone (its endpoint deleted meanwhile).
RECORD_ATTEMPT = """
INSERT INTO webhook_delivery_attempts
    (delivery_id, attempt, started_at, finished_at, status_code, error)
SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = $1)
ON CONFLICT (delivery_id, attempt) DO NOTHING
"""

# Only the claim that holds the latest attempt number decides the delivery's state.
DELIVERED = """
UPDATE webhook_deliveries SET status = 'succeeded', delivered_at = $3, lease_until = NULL
WHERE id = $1 AND attempts = $2 AND status = 'pending'
"""

# $3: when the next attempt is due, or NULL when the retry window is over (failed).
RETRY_OR_FAIL = """
UPDATE webhook_deliveries SET
    status = CASE WHEN $3::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,
    next_attempt_at = coalesce($3, next_attempt_at),
    lease_until = NULL
WHERE id = $1 AND attempts = $2 AND status = 'pending'
"""

ENDPOINT_SUCCEEDED = """
UPDATE webhook_endpoints SET failing_since = NULL, consecutive_failures = 0 WHERE id = $1
"""

ENDPOINT_FAILED = """
UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $2),
    consecutive_failures = consecutive_failures + 1
WHERE id = $1
"""

# Disabled when every attempt has failed for `$2` seconds, at least `$3` of them: checked on
# the clock, not only when an attempt fails, since the last attempt of a dead endpoint's
# delivery may come before its streak is that old. A row locked elsewhere (an attempt being
# recorded, another notifier's check) is skipped, left to the next check. Counted once: only
# the statement that flips the status returns a row.
DISABLE_FAILING = """
UPDATE webhook_endpoints SET status = 'disabled',
    disabled_reason = 'every delivery failed since ' || to_char(failing_since AT TIME ZONE 'UTC',
        'YYYY-MM-DD"T"HH24:MI:SS"Z"') || ' (' || consecutive_failures || ' attempts)'
WHERE id IN (
    SELECT id FROM webhook_endpoints
    WHERE status = 'enabled' AND consecutive_failures >= $3
      AND failing_since <= $1::timestamptz - $2::float8 * interval '1 second'
    FOR UPDATE SKIP LOCKED
)
RETURNING id, tenant, url, disabled_reason
"""

# Gauges: deliveries waiting (due or backing off, of enabled endpoints), the oldest one's age,
# events not fanned out yet, endpoints disabled.
GAUGES = """
SELECT
    (SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints ep ON ep.id = d.endpoint_id
     WHERE d.status = 'pending' AND ep.status = 'enabled') AS pending,
    (SELECT coalesce(extract(epoch FROM $1 - min(d.created_at)), 0)
     FROM webhook_deliveries d JOIN webhook_endpoints ep ON ep.id = d.endpoint_id
     WHERE d.status = 'pending' AND ep.status = 'enabled') AS oldest_s,
    (SELECT count(*) FROM webhook_events WHERE NOT fanned_out) AS unfanned,
    (SELECT count(*) FROM webhook_endpoints WHERE status = 'disabled') AS disabled
"""

NOT_FANNED_OUT = """
SELECT count(*) FROM webhook_events WHERE NOT fanned_out
"""


# Retention (notifier/worker.py `prune`): finished deliveries made before the cutoff, a batch at
# a time (their attempts go with them, ON DELETE CASCADE); redelivered ones count from then.
PRUNE_DELIVERIES = """
DELETE FROM webhook_deliveries WHERE id IN (
    SELECT id FROM webhook_deliveries
    WHERE status <> 'pending' AND created_at < $1 AND retry_from < $1
    LIMIT $2)
"""

# Events fanned out before the cutoff with no delivery left. Exactly-once firing does not rest on
# them (alert_firings and alert_limits do), so an event may go.
PRUNE_EVENTS = """
DELETE FROM webhook_events WHERE id IN (
    SELECT e.id FROM webhook_events e
    WHERE e.fanned_out AND e.created_at < $1
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)
    LIMIT $2)
"""
