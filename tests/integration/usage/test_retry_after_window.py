"""A retry that ingest accepts after its Redis dedupe key expired (METER_DEDUPE_WINDOW) counts
once: in the usage answer while it is pending and after the aggregator dropped it, and in
Postgres. A one-second window lets the test outwait it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from meter.config import Settings
from meter.redis_keys import MAY_REPEAT_FIELD, Keys, shard_of
from meter.usage import pending
from tests.conftest import start_client

from .conftest import HOUR, Client, drain, get, seed_customer, seed_plan


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(dedupe_window_s=1.0)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    c = await start_client(settings)
    yield c
    await c.close()


async def post(client: Client, api_key: str, event: dict[str, Any]) -> str:
    response = await client.post(
        "/v1/events", data=orjson.dumps([event]), headers={"Authorization": f"Bearer {api_key}"}
    )
    doc = await response.json()
    assert response.status == 200, doc
    return str(doc["results"][0]["status"])


async def outwait_window(redis: Redis, settings: Settings, event_id: str) -> None:
    """Until Redis forgot the event's dedupe key (EXISTS expires it as soon as it is due)."""
    key = Keys(settings.redis_prefix).dedupe(
        shard_of("acme", event_id, settings.shards), "acme", event_id
    )
    for _ in range(300):  # the key lives 1 s: a few polls
        if not await redis.exists(key):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{key} outlived its window")


async def rollup_events(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT coalesce(sum(event_count), 0) FROM usage_rollups"))


def quantity(doc: dict[str, Any], item: str) -> str:
    (found,) = [i for i in doc["items"] if i["subscription_item"] == item]
    return str(found["quantity"])


async def test_a_retry_of_a_folded_event_after_the_window_counts_once(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    await seed_plan(db)
    event = {"id": "r1", "customer": "c-1", "meter": "calls", "value": 7}
    event["timestamp"] = int(time.time()) - 2 * HOUR
    assert await post(client, api_key, event) == "accepted"
    assert await drain(settings, redis) == 1
    await outwait_window(redis, settings, "r1")

    # Past the window Redis no longer knows the id: accepted again, and pending, flagged.
    assert await post(client, api_key, event) == "accepted"
    status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
    assert status == 200, doc
    assert quantity(doc, "si_m_c-1") == "7"
    assert doc["freshness"]["pending_events"] == 0

    # The aggregator drops it (Postgres dedupe): the answer and the rollups stay at one event.
    assert await drain(settings, redis) == 0  # events folded: none new
    status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
    assert quantity(doc, "si_m_c-1") == "7"
    assert await rollup_events(db) == 1


async def test_a_retry_after_the_window_while_the_first_is_still_pending_counts_once(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    """The aggregator is behind: both entries wait in the stream; it folds only the first."""
    await seed_plan(db)
    event = {"id": "r2", "customer": "c-1", "meter": "calls", "value": 5}  # timestamp: now
    assert await post(client, api_key, event) == "accepted"
    await outwait_window(redis, settings, "r2")
    assert await post(client, api_key, event) == "accepted"

    status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
    assert status == 200, doc
    assert quantity(doc, "si_m_c-1") == "5"
    assert doc["freshness"]["pending_events"] == 1

    assert await drain(settings, redis) == 1
    status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
    assert quantity(doc, "si_m_c-1") == "5"
    assert await rollup_events(db) == 1


async def test_a_customer_without_subscription_counts_a_late_retry_once(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    await seed_customer(db, "free-1", "cus_free")
    event = {"id": "r3", "customer": "free-1", "meter": "calls", "value": 3}
    event["timestamp"] = int(time.time()) - 60
    assert await post(client, api_key, event) == "accepted"
    assert await drain(settings, redis) == 1
    await outwait_window(redis, settings, "r3")
    assert await post(client, api_key, event) == "accepted"

    status, doc = await get(client, api_key, "/v1/customers/free-1/usage")
    assert status == 200, doc
    assert {i["meter"]: i["quantity"] for i in doc["items"]} == {"calls": "3"}
    assert await drain(settings, redis) == 0
    status, doc = await get(client, api_key, "/v1/customers/free-1/usage")
    assert {i["meter"]: i["quantity"] for i in doc["items"]} == {"calls": "3"}
    assert await rollup_events(db) == 1


async def test_only_entries_that_may_repeat_a_forgotten_event_are_flagged(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    """With the default window (1 h, 5 min future tolerance), an explicit timestamp of the last
    ~54 minutes cannot repeat an event Redis forgot; an older one or a defaulted one can."""
    wide = settings.replace(dedupe_window_s=3600.0)
    c = await start_client(wide)
    try:
        now = int(time.time())
        for event_id, timestamp in (("recent", now - 600), ("old", now - 3600), ("bare", None)):
            event: dict[str, Any] = {"id": event_id, "customer": "c-1", "meter": "calls"}
            if timestamp is not None:
                event["timestamp"] = timestamp
            assert await post(c, api_key, event) == "accepted"
    finally:
        await c.close()
    flags: dict[str, bool] = {}
    for name in pending.streams(Keys(settings.redis_prefix), settings.shards):
        for _, fields in await redis.xrange(name):
            flags[orjson.loads(fields[b"e"])[2]] = MAY_REPEAT_FIELD in fields
    assert flags == {"recent": False, "old": True, "bare": True}
