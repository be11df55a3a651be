"""SQL of the outgoing webhooks (tables: migrations/0020_webhook_events.sql)."""

from __future__ import annotations

# An event is enqueued once: a retry of the same announcement finds its row and adds nothing.
ENQUEUE_EVENT = """
INSERT INTO webhook_events (id, tenant, type, data)
VALUES ($1, $2, $3, $4::jsonb)
ON CONFLICT (id) DO NOTHING
"""
