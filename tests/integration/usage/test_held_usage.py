"""GET /v1/customers/{id}/usage while the item's Stripe meter is inactive: the reporter holds its
usage (Stripe would drop it), so the projection says so on the item."""

from __future__ import annotations

import time

import asyncpg
from redis.asyncio import Redis

from meter.config import Settings

from .conftest import HOUR, Client, calls, drain, get, post_events, seed_plan


async def test_usage_of_an_inactive_meter_is_marked_held(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    await seed_plan(db, "c-held")
    await post_events(client, api_key, calls("c-held", "a", [5], int(time.time()) - HOUR))
    assert await drain(settings, redis) == 1
    await db.execute("UPDATE billing_meters SET status = 'inactive' WHERE id = 'mtr_calls'")
    status, doc = await get(client, api_key, "/v1/customers/c-held/usage")
    assert status == 200, doc
    held = {i["subscription_item"]: i.get("usage_held", False) for i in doc["items"]}
    assert held == {"si_m_c-held": True, "si_f_c-held": False}
