-- Outgoing webhooks, after the event (0020): a tenant's endpoints and their signing secrets, the
-- notifier's fan-out cursor, one delivery per (event, endpoint) and its attempts
-- (notifier/, docs/webhooks.md).

-- The transaction that enqueued each event. Identity values are taken in insert order but
-- commit in any order, so a cursor on `seq` alone would step past an event whose transaction
-- commits later with a smaller seq. Every row whose xid is below the oldest transaction still
-- running is final, so the fan-out walks (xid, seq) up to that horizon and never skips one.
ALTER TABLE webhook_events ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX webhook_events_fanout ON webhook_events (xid, seq);

CREATE TABLE webhook_endpoints (
    id text PRIMARY KEY,  -- 'we_' + random
    tenant text NOT NULL,
    url text NOT NULL,
    enabled_events text[] NOT NULL,
    status text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    disabled_reason text,
    created_at timestamptz NOT NULL,
    -- The first failed attempt since the last success (NULL: the last attempt succeeded), and
    -- failed attempts since then: an endpoint failing for long enough is disabled.
    failing_since timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant, created_at, id);

-- Secrets sign, so they are kept as they are (an HMAC needs the key). The current one has no
-- expiry; a rotated-out one signs too until `expires_at`.
CREATE TABLE webhook_endpoint_secrets (
    endpoint_id text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    secret text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    PRIMARY KEY (endpoint_id, secret)
);

-- Where the fan-out stopped: the (xid, seq) of the last event it fanned out. One row.
CREATE TABLE webhook_fanout_cursor (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    xid xid8 NOT NULL,
    seq bigint NOT NULL
);
INSERT INTO webhook_fanout_cursor (xid, seq) VALUES ('0'::xid8, 0);

CREATE TABLE webhook_deliveries (
    id text PRIMARY KEY,  -- 'whd_' + random
    event_id text NOT NULL REFERENCES webhook_events (id),
    endpoint_id text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    tenant text NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'succeeded', 'failed')),
    -- Attempts claimed so far; the claim's number fences its outcome (a late one is dropped).
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    -- A claimed attempt owns the row until then (a crashed notifier's claim runs out).
    lease_until timestamptz,
    created_at timestamptz NOT NULL,
    -- Retries stop this long after it (creation, or a manual redelivery).
    retry_from timestamptz NOT NULL,
    delivered_at timestamptz,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC, id);

CREATE TABLE webhook_delivery_attempts (
    delivery_id text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    status_code integer,  -- NULL: no answer (timeout, refused)
    error text,
    PRIMARY KEY (delivery_id, attempt)
);
