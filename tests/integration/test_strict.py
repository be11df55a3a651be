"""Events for customers or meters billing does not know: rejected under METER_STRICT; otherwise
accepted with a warning in the answer and counted (meter_event_warnings_total)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from meter import appkeys
from meter.config import Settings
from meter.ingest.strict import KnownNames
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


async def test_without_strict_mode_unknown_names_are_accepted_with_a_warning_and_counted(
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
    client = await start_client(settings)
    try:
        body = [
            ev("a", customer="user-1", meter="seats"),
            ev("b", customer="cus_known", meter="seats"),
            ev("c", customer="stranger", meter="seats"),
            ev("d", customer="user-1", meter="nonsense"),
            ev("e", customer="user-1", meter="seats", value=-1),
        ]

        async def post() -> dict[str, Any]:
            response = await client.post(
                "/v1/events", data=orjson.dumps(body), headers=auth_header(api_key)
            )
            assert response.status == 200
            doc: dict[str, Any] = await response.json()
            return doc

        doc = await post()
        again = await post()  # the retry: duplicates keep the warning, are not counted again
        registry = client.app[appkeys.METRICS].registry  # type: ignore[index]
    finally:
        await client.close()
    assert [(r["status"], r.get("reason"), r.get("warning")) for r in doc["results"]] == [
        ("accepted", None, None),
        ("accepted", None, None),
        ("accepted", None, "unknown_customer"),
        ("accepted", None, "unknown_meter"),
        ("rejected", "invalid_value", None),
    ]
    assert "METER_STRICT" in doc["results"][2]["message"]
    assert [r.get("warning") for r in again["results"]][2:4] == [
        "unknown_customer",
        "unknown_meter",
    ]
    assert (doc["accepted"], doc["rejected"]) == (4, 1)
    assert sorted(e.id for e in await stream_events(redis, settings)) == ["a", "b", "c", "d"]
    for warning in ("unknown_customer", "unknown_meter"):
        count = registry.get_sample_value("meter_event_warnings_total", {"warning": warning})
        assert count == 1.0, warning


async def test_warnings_never_hold_ingest_when_postgres_is_gone(
    settings: Settings, api_key: str, redis: Redis
) -> None:
    client = await start_client(settings)
    try:
        # Warm the key cache, then take the pool away: ingest needs only Redis.
        response = await client.post(
            "/v1/events", data=orjson.dumps(ev("w1")), headers=auth_header(api_key)
        )
        assert response.status == 200
        await client.app[appkeys.PG].close()  # type: ignore[index]
        response = await client.post(
            "/v1/events", data=orjson.dumps(ev("w2", customer="new")), headers=auth_header(api_key)
        )
        doc = await response.json()
    finally:
        await client.close()
    assert response.status == 200, doc
    assert doc["results"][0]["status"] == "accepted"
    assert "warning" not in doc["results"][0]


async def test_a_warning_past_its_ttl_answers_at_once_and_is_refreshed_behind(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Outside strict mode a request never waits on Postgres for a name it has seen: a stale
    entry answers, one read refreshes it; only a name never read waits for its first read."""
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    # Every entry is stale as soon as it is read.
    known = KnownNames(pool, ttl_s=0.0, warning_timeout_s=1)
    try:
        assert known.warnings_now("acme", {"late"}, {"m"}) is None  # never read
        assert await known.warnings("acme", {"late"}, {"m"}) == ({"late"}, {"m"})
        await db.execute(
            """INSERT INTO customers (stripe_id, tenant, external_id, event_created)
               VALUES ('cus_late', 'acme', 'late', 1)"""
        )
        # Stale: the cached answer at once, and one refresh behind it (per tenant at a time).
        assert known.warnings_now("acme", {"late"}, {"m"}) == ({"late"}, {"m"})
        refresh = known._refreshing["acme"]
        assert known.warnings_now("acme", {"late"}, {"m"}) == ({"late"}, {"m"})
        assert known._refreshing["acme"] is refresh
        await refresh
        assert known.warnings_now("acme", {"late"}, {"m"}) == (set(), {"m"})
    finally:
        await known.close()
        await pool.close()


class CountingReads(KnownNames):
    reads = 0

    async def unknown(
        self, tenant: str, customers: Collection[str], meters: Collection[str]
    ) -> tuple[set[str], set[str]]:
        self.reads += 1
        return await super().unknown(tenant, customers, meters)


async def test_names_found_stale_meanwhile_are_read_again_together(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Customers going stale one request after another cost one read between them, not one
    each (a thousand customers' entries expire in turn under steady load)."""
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    known = CountingReads(pool, ttl_s=0.0, warning_timeout_s=1)
    names = [f"c{n}" for n in range(50)]
    try:
        await known.warnings("acme", set(names), {"m"})
        await db.execute(
            """INSERT INTO customers (stripe_id, tenant, external_id, event_created)
               SELECT 'cus_' || n, 'acme', 'c' || n, 1 FROM generate_series(0, 49) AS n"""
        )
        for name in names:  # one request each, before the refresh task first runs
            assert known.warnings_now("acme", {name}, {"m"}) == ({name}, {"m"})
        await known._refreshing["acme"]
        assert known.reads == 2  # the first read, then one refresh for all fifty
        answers = [known.warnings_now("acme", {n}, {"m"}) for n in names]
        assert answers == [(set(), {"m"})] * len(names)
    finally:
        await known.close()
        await pool.close()
