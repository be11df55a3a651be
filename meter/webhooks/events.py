"""Enqueueing an outgoing webhook event, in the caller's transaction.

Whoever changes state that deserves an announcement (an alert threshold crossed, a limit
reached) writes the event in the same transaction as the change: both commit or neither does,
so a crash never announces what did not happen nor forgets what did. The id is derived from what
the event is about, so announcing the same thing twice stores one event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any, Final

import asyncpg
import orjson

from meter.webhooks import queries

THRESHOLD_CROSSED: Final = "usage.threshold_crossed"
PROJECTED_TO_EXCEED: Final = "usage.projected_to_exceed"
LIMIT_REACHED: Final = "usage.limit_reached"
LIMIT_CLEARED: Final = "usage.limit_cleared"
EVENT_TYPES: Final = (THRESHOLD_CROSSED, PROJECTED_TO_EXCEED, LIMIT_REACHED, LIMIT_CLEARED)


def event_id(tenant: str, event_type: str, subject: str) -> str:
    """A stable id: the same (tenant, type, subject) always names the same event."""
    digest = hashlib.blake2b(
        "\x1f".join((tenant, event_type, subject)).encode(), digest_size=12
    ).hexdigest()
    return f"evt_{digest}"


async def enqueue(
    conn: asyncpg.Connection,
    tenant: str,
    event_type: str,
    subject: str,
    data: Mapping[str, Any],
) -> str:
    """Store one event for delivery (in the caller's transaction) and return its id.

    `subject` says what the event is about, uniquely within its type (for a threshold: rule,
    customer, period and threshold); enqueueing the same subject again stores nothing new.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    id_ = event_id(tenant, event_type, subject)
    await conn.execute(queries.ENQUEUE_EVENT, id_, tenant, event_type, orjson.dumps(data).decode())
    return id_


async def take_not_fanned_out(conn: asyncpg.Connection, limit: int) -> list[str]:
    """Up to `limit` events not fanned out yet, locked for the caller's transaction (none that
    another transaction holds)."""
    return [r["id"] for r in await conn.fetch(queries.TAKE_NOT_FANNED_OUT, limit)]


async def mark_fanned_out(conn: asyncpg.Connection, ids: list[str]) -> None:
    """In the transaction that made their deliveries."""
    await conn.execute(queries.MARK_FANNED_OUT, ids)


async def prune(conn: asyncpg.Connection, before: dt.datetime, batch: int) -> int:
    """Delete up to `batch` events fanned out before `before` that no delivery names; returns
    how many."""
    status = await conn.execute(queries.PRUNE_EVENTS, before, batch)
    return int(status.split()[-1])
