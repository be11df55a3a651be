-- Outgoing webhooks: the events meter announces to a tenant's endpoints (usage alerts and
-- limits). meter/webhooks/events.py enqueues a row in the same transaction as the state change
-- it announces, so an event exists exactly when that change committed; the notifier fans each
-- event out to the endpoints subscribed to its type and delivers it (docs/webhooks.md).
CREATE TABLE webhook_events (
    -- 'evt_' and a digest of what the event is about: a retried enqueue finds the same id, and a
    -- receiver dedupes on it.
    id text PRIMARY KEY,
    tenant text NOT NULL,
    type text NOT NULL,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Order of enqueue, for the notifier's fan-out cursor.
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE INDEX webhook_events_tenant ON webhook_events (tenant, created_at);
