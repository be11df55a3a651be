"""SQL of the outgoing webhooks (tables: migrations/0020_webhook_events.sql)."""

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
