"""The per-key ingest rate limit: 429 + Retry-After + the JSON error, nothing written."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from meter import appkeys, auth
from meter.config import Settings
from meter.redis_keys import Keys
from tests.conftest import start_client


def event(event_id: str) -> bytes:
    return orjson.dumps({"id": event_id, "customer": "c1", "meter": "calls"})


async def stream_total(redis: Redis, settings: Settings) -> int:
    keys = Keys(settings.redis_prefix)
    total = 0
    for shard in range(settings.shards):
        total += await redis.xlen(keys.stream(shard))
    return total


async def post(client: Any, key: str, event_id: str) -> Any:
    return await client.post(
        "/v1/events", data=event(event_id), headers={"Authorization": f"Bearer {key}"}
    )


async def test_over_the_limit_gets_429_and_nothing_is_written(
    settings: Settings, db: asyncpg.Connection, redis: Redis, api_key: str
) -> None:
    # One token every 100 s: the test never sees one come back.
    limited = settings.replace(ingest_rate_limit=0.01, ingest_rate_burst=3)
    client = await start_client(limited)
    try:
        for i in range(3):
            response = await post(client, api_key, f"ok-{i}")
            assert response.status == 200
        written = await stream_total(redis, settings)
        assert written == 3

        response = await post(client, api_key, "refused")
        assert response.status == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 100
        doc = await response.json()
        assert doc["error"]["type"] == "rate_limit_error"
        assert "rate limit" in doc["error"]["message"]
        assert await stream_total(redis, settings) == written

        # Per key, not per tenant: another key of the same tenant has a bucket of its own.
        other = await auth.create_key(db, name="second", tenant="acme")
        assert (await post(client, other, "other-key")).status == 200
        # An unknown key is refused as such, before any bucket.
        assert (await post(client, "mk_live_unknown", "x")).status == 401

        metric = client.app[appkeys.METRICS].requests.labels("429")  # type: ignore[index]
        assert metric._value.get() == 1
    finally:
        await client.close()


async def test_zero_disables_the_limit(settings: Settings, api_key: str) -> None:
    client = await start_client(settings.replace(ingest_rate_limit=0, ingest_rate_burst=1))
    try:
        assert client.app[appkeys.RATE_LIMITER] is None  # type: ignore[index]
        for i in range(5):
            assert (await post(client, api_key, f"e{i}")).status == 200
    finally:
        await client.close()


async def test_the_default_limit_is_generous(client: Any, api_key: str) -> None:
    limiter = client.app[appkeys.RATE_LIMITER]
    assert limiter is not None
    for i in range(50):
        assert (await post(client, api_key, f"d{i}")).status == 200
