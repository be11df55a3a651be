"""A tenant's webhook endpoints and their deliveries in Postgres: what the API routes and
`meter webhooks` do, each in one transaction, with the time passed in (tests move it)."""

from __future__ import annotations

import datetime as dt
import secrets as random_ids
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from meter.webhooks import queries, signing


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
