"""The owner of the webhook tables but webhook_events (meter/webhooks/events.py): endpoints,
their secrets, deliveries and their attempts. What the API routes and
`meter webhooks` do, each in one transaction, and the notifier's steps (notifier/worker.py, which
holds their crash-safe order), with the time passed in (tests move it)."""

from __future__ import annotations

import datetime as dt
import secrets as random_ids
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from meter.webhooks import events, queries, signing


@dataclass(frozen=True, slots=True)
class Rotated:
    endpoint: asyncpg.Record
    secret: str
    previous_expires: dt.datetime


def new_endpoint_id() -> str:
    return "we_" + random_ids.token_hex(12)


async def create(
    conn: asyncpg.Connection, tenant: str, url: str, types: list[str], now: dt.datetime
) -> tuple[asyncpg.Record, str]:
    """A new enabled endpoint and its signing secret (returned here only)."""
    secret = signing.new_secret()
    async with conn.transaction():
        row = await conn.fetchrow(
            queries.INSERT_ENDPOINT, new_endpoint_id(), tenant, url, types, now
        )
        assert row is not None
        await conn.execute(queries.INSERT_SECRET, row["id"], secret, now)
    return row, secret


async def rotate(
    conn: asyncpg.Connection, tenant: str, endpoint_id: str, overlap_s: int, now: dt.datetime
) -> Rotated | None:
    """A new current secret; the one it replaces signs too for `overlap_s` (None: no such
    endpoint for this tenant)."""
    secret = signing.new_secret()
    expires = now + dt.timedelta(seconds=overlap_s)
    async with conn.transaction():
        row = await conn.fetchrow(queries.LOCK_ENDPOINT, tenant, endpoint_id)
        if row is None:
            return None
        await conn.execute(queries.DROP_EXPIRED_SECRETS, endpoint_id, now)
        await conn.execute(queries.EXPIRE_CURRENT_SECRET, endpoint_id, expires)
        await conn.execute(queries.INSERT_SECRET, endpoint_id, secret, now)
    return Rotated(row, secret, expires)


async def update(
    conn: asyncpg.Connection,
    tenant: str,
    endpoint_id: str,
    *,
    url: str | None = None,
    types: list[str] | None = None,
    disabled: bool | None = None,
    reason: str | None = None,
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        queries.UPDATE_ENDPOINT, tenant, endpoint_id, url, types, disabled, reason
    )


async def delete(conn: asyncpg.Connection, tenant: str, endpoint_id: str) -> bool:
    """Drop the endpoint with its secrets, deliveries and their attempts."""
    status = await conn.execute(queries.DELETE_ENDPOINT, tenant, endpoint_id)
    return status.endswith(" 1")


async def deliveries(
    conn: asyncpg.Connection,
    tenant: str,
    endpoint_id: str,
    *,
    limit: int,
    status: str | None = None,
    delivery_id: str | None = None,
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(queries.LIST_DELIVERIES, tenant, endpoint_id, delivery_id, status, limit)
    )


async def redeliver(
    conn: asyncpg.Connection, tenant: str, endpoint_id: str, delivery_id: str, now: dt.datetime
) -> bool:
    status = await conn.execute(queries.REDELIVER, tenant, endpoint_id, delivery_id, now)
    return status.endswith(" 1")


# The notifier's steps.


async def fan_out_batch(conn: asyncpg.Connection, now: dt.datetime, limit: int) -> int:
    """Step 1, in one transaction: up to `limit` events not fanned out → their deliveries, the
    events marked; returns the events fanned out (those other notifiers hold are left to
    them)."""
    async with conn.transaction():
        ids = await events.take_not_fanned_out(conn, limit)
        if not ids:
            return 0
        await conn.execute(queries.FAN_OUT, ids, now)
        await events.mark_fanned_out(conn, ids)
    return len(ids)


async def prune_deliveries(conn: asyncpg.Connection, before: dt.datetime, batch: int) -> int:
    """Delete up to `batch` finished deliveries (and their attempts) made before `before`;
    returns how many."""
    status = await conn.execute(queries.PRUNE_DELIVERIES, before, batch)
    return int(status.split()[-1])


async def events_not_fanned_out(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(queries.NOT_FANNED_OUT))


async def claim(
    conn: asyncpg.Connection, now: dt.datetime, limit: int, lease_s: float
) -> list[asyncpg.Record]:
    """Step 2: up to `limit` due deliveries with what sending them needs, each leased for
    `lease_s` seconds of Postgres's clock."""
    return list(await conn.fetch(queries.CLAIM, now, limit, lease_s))


async def record_attempt(
    conn: asyncpg.Connection,
    delivery_id: str,
    attempt: int,
    started: dt.datetime,
    finished: dt.datetime,
    status_code: int | None,
    error: str | None,
) -> None:
    await conn.execute(
        queries.RECORD_ATTEMPT, delivery_id, attempt, started, finished, status_code, error
    )


async def delivered(
    conn: asyncpg.Connection, delivery_id: str, attempt: int, now: dt.datetime
) -> bool:
    """Settle the delivery as succeeded; False when attempt `attempt` no longer owns it."""
    status = await conn.execute(queries.DELIVERED, delivery_id, attempt, now)
    return status.endswith(" 1")


async def retry_or_fail(
    conn: asyncpg.Connection, delivery_id: str, attempt: int, retry_at: dt.datetime | None
) -> bool:
    """Due again at `retry_at`, or failed (None); False when attempt `attempt` no longer owns
    the delivery."""
    status = await conn.execute(queries.RETRY_OR_FAIL, delivery_id, attempt, retry_at)
    return status.endswith(" 1")


async def endpoint_succeeded(conn: asyncpg.Connection, endpoint_id: str) -> None:
    await conn.execute(queries.ENDPOINT_SUCCEEDED, endpoint_id)


async def endpoint_failed(conn: asyncpg.Connection, endpoint_id: str, now: dt.datetime) -> None:
    await conn.execute(queries.ENDPOINT_FAILED, endpoint_id, now)


async def disable_failing(
    conn: asyncpg.Connection, now: dt.datetime, after_s: float, min_failures: int
) -> list[asyncpg.Record]:
    """Disable the endpoints whose every attempt failed for `after_s` seconds, at least
    `min_failures` of them; returns those disabled now (id, tenant, url, disabled_reason)."""
    return list(await conn.fetch(queries.DISABLE_FAILING, now, after_s, min_failures))


async def queue_gauges(conn: asyncpg.Connection, now: dt.datetime) -> asyncpg.Record:
    """Pending deliveries, the oldest one's age, events not fanned out, disabled endpoints."""
    row = await conn.fetchrow(queries.GAUGES, now)
    assert row is not None
    return row


def _unix(value: dt.datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def endpoint_doc(row: asyncpg.Record) -> dict[str, Any]:
    """An endpoint as the API shows it (never its secrets)."""
    return {
        "object": "webhook_endpoint",
        "id": row["id"],
        "url": row["url"],
        "enabled_events": list(row["enabled_events"]),
        "status": row["status"],
        "disabled_reason": row["disabled_reason"],
        "created": _unix(row["created_at"]),
    }


def delivery_doc(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "object": "webhook_delivery",
        "id": row["id"],
        "endpoint": row["endpoint_id"],
        "event": {
            "id": row["event_id"],
            "type": row["event_type"],
            "created": _unix(row["event_created"]),
        },
        "status": row["status"],
        "attempts": row["attempts"],
        "next_attempt": _unix(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "created": _unix(row["created_at"]),
        "delivered": _unix(row["delivered_at"]),
        "attempt_log": orjson.loads(row["attempt_log"]),
    }
