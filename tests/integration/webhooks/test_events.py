"""Enqueueing an outgoing webhook event: inside the caller's transaction, once per subject."""

from __future__ import annotations

import asyncpg
import pytest

from meter.webhooks import events


async def test_an_event_is_stored_once_per_subject(db: asyncpg.Connection) -> None:
    data = {"customer": "c-1", "threshold": "80"}
    first = await events.enqueue(db, "acme", events.THRESHOLD_CROSSED, "rule-1/c-1/p/80", data)
    again = await events.enqueue(db, "acme", events.THRESHOLD_CROSSED, "rule-1/c-1/p/80", data)
    other = await events.enqueue(db, "beta", events.THRESHOLD_CROSSED, "rule-1/c-1/p/80", data)
    assert first == again != other
    rows = await db.fetch("SELECT id, tenant, type, data FROM webhook_events ORDER BY seq")
    assert [(r["id"], r["tenant"]) for r in rows] == [(first, "acme"), (other, "beta")]
    assert rows[0]["type"] == "usage.threshold_crossed"


async def test_a_rolled_back_change_announces_nothing(db: asyncpg.Connection) -> None:
    async def change_that_fails() -> None:
        async with db.transaction():
            await events.enqueue(db, "acme", events.LIMIT_REACHED, "s", {})
            raise RuntimeError("the state change failed")

    with pytest.raises(RuntimeError):
        await change_that_fails()
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_unknown_types_are_refused(db: asyncpg.Connection) -> None:
    with pytest.raises(ValueError, match="unknown webhook event type"):
        await events.enqueue(db, "acme", "usage.whatever", "s", {})
