"""The durable dedupe key (migration 0008): one rule in Python and SQL, and exactly once even
when the same event reaches two shards' streams at once."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter import wiring
from meter.config import Settings
from meter.events import UsageEvent, event_key
from meter.migrate import migrate
from meter.redis_keys import Keys
from tests.conftest import migrations_before
from tests.integration.aggregator.conftest import now_ms, rollups
from tests.unit.aggregator.reference import reference

PAIRS = [
    ("acme", "evt_1"),
    ("acme", "evt_2"),
    ("acm", "eevt_1"),  # the separator keeps this apart from ("acme", "evt_1")
    ("tenant-ü", "идентификатор-🧾"),
    ("t", "x" * 200),
]


async def test_python_and_sql_compute_the_same_key(db: asyncpg.Connection) -> None:
    for tenant, event_id in PAIRS:
        assert await db.fetchval("SELECT meter_event_key($1, $2)", tenant, event_id) == (
            event_key(tenant, event_id)
        )
    assert len({event_key(t, i) for t, i in PAIRS}) == len(PAIRS)


async def test_an_upgrade_keeps_every_id_seen_before(
    empty_database_url: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn, migrations_before(8, tmp_path))
        await conn.executemany(
            "INSERT INTO usage_event_ids (tenant, event_id) VALUES ($1, $2)", PAIRS
        )
        await migrate(conn)
        keys = {r["key"] for r in await conn.fetch("SELECT key FROM usage_event_keys")}
        assert keys == {event_key(t, i) for t, i in PAIRS}
        assert await conn.fetchval("SELECT to_regclass('usage_event_ids')") is None
    finally:
        await conn.close()


@pytest.mark.parametrize("raw_log", [True, False])
async def test_one_event_in_two_shards_is_folded_once(
    redis: Redis, settings: Settings, db: asyncpg.Connection, raw_log: bool
) -> None:
    """Ids map to one shard, so two flushes never insert the same key together, except when
    METER_SHARDS changed with entries still queued. Then the same event can sit in two
    streams; two lanes flush them concurrently, and whichever commits second either finds the
    key (probe) or fails on the primary key and rolls back whole; the retry finds it."""
    ts = now_ms()
    event = UsageEvent("acme", "evt_twice", "cus_1", "api_calls", "7", ts, ts)
    keys = Keys(settings.redis_prefix)
    for shard in (0, 1):
        await redis.xadd(keys.stream(shard), {"e": event.encode()})
    config = settings.replace(raw_log=raw_log, aggregator_lanes=2)
    for _ in range(3):  # a failed drain leaves its shard's entries for the next one
        try:
            async with Worker(config, redis, attributor=wiring.attributor()) as worker:
                await worker.drain()
        except asyncpg.UniqueViolationError:
            continue
        if all([await redis.xlen(keys.stream(s)) == 0 for s in (0, 1)]):
            break
    assert [await redis.xlen(keys.stream(s)) for s in (0, 1)] == [0, 0]
    assert await rollups(db) == reference([event])
    assert await db.fetchval("SELECT count(*) FROM usage_event_keys") == 1
    assert await db.fetchval("SELECT count(*) FROM usage_events") == (1 if raw_log else 0)
