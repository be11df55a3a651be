"""METER_STRICT: events for customers or meters billing does not know are rejected."""

from __future__ import annotations

import asyncpg
import orjson
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from meter.config import Settings
from tests.conftest import start_client
from tests.integration.test_ingest import auth_header, ev, stream_events


async def test_strict_mode_rejects_unknown_customers_and_meters(
    settings: Settings, api_key: str, db: asyncpg.Connection, redis: Redis
) -> None:
    await db.execute(
        """INSERT INTO customers (stripe_id, tenant, external_id, event_created)
           VALUES ('cus_known', 'acme', 'user-1', 1)"""
    )
    await db.execute(
        """INSERT INTO meter_definitions (tenant, meter, aggregation)
           VALUES ('acme', 'seats', 'max')"""
    )
    client = await start_client(settings.replace(strict=True))
    try:
        body = [
            ev("a", customer="user-1", meter="seats"),  # our external id
            ev("b", customer="cus_known", meter="seats"),  # the Stripe id
            ev("c", customer="stranger", meter="seats"),
            ev("d", customer="user-1", meter="nonsense"),
            ev("e", customer="user-1", meter="seats", value=-1),
        ]
        response = await client.post(
            "/v1/events", data=orjson.dumps(body), headers=auth_header(api_key)
        )
        doc = await response.json()
    finally:
        await client.close()
    assert [(r["status"], r.get("reason")) for r in doc["results"]] == [
        ("accepted", None),
        ("accepted", None),
        ("rejected", "unknown_customer"),
        ("rejected", "unknown_meter"),
        ("rejected", "invalid_value"),
    ]
    assert (doc["accepted"], doc["rejected"]) == (2, 3)
    assert sorted(e.id for e in await stream_events(redis, settings)) == ["a", "b"]


async def test_without_strict_mode_unknown_names_are_accepted(
    client: TestClient[object, object], api_key: str
) -> None:
    response = await client.post(
        "/v1/events", data=orjson.dumps(ev("x", customer="stranger")), headers=auth_header(api_key)
    )
    assert (await response.json())["accepted"] == 1
