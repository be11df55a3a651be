"""Partitions ahead of time; retention drops raw partitions and their ids, rollups stay."""

from __future__ import annotations

import asyncpg
from redis.asyncio import Redis

from aggregator.maintenance import create_partitions, drop_old_partitions
from aggregator.worker import Worker
from meter import wiring
from meter.config import Settings
from tests.integration.aggregator.conftest import Client, make_events, now_ms, post_events, rollups

PARTITIONS = """
SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_events'::regclass
"""


async def test_partitions_are_created_ahead_once(
    db: asyncpg.Connection, settings: Settings
) -> None:
    created = await create_partitions(db, settings)
    # 48 h late window back, 2 days ahead: 5 or 6 days depending on the hour.
    assert 5 <= len(created) <= 6
    assert await db.fetchval(PARTITIONS) == len(created)
    assert await create_partitions(db, settings) == []


async def test_retention_drops_raw_partitions_and_keeps_rollups(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    await post_events(client, api_key, make_events(200, seed=7))
    async with Worker(settings, redis, attributor=wiring.attributor()) as worker:
        await worker.drain()
    kept = await rollups(db)
    parts = await db.fetchval(PARTITIONS)
    assert parts >= 1

    # Nothing is old enough yet.
    assert await drop_old_partitions(db, settings) == []
    # Far enough in the future, every raw partition (and its dedupe ids) is past retention.
    later = now_ms() + int(settings.raw_retention_s * 1000) + 3 * 86_400_000
    dropped = await drop_old_partitions(db, settings, at_ms=later)

    assert len(dropped) == parts
    assert await db.fetchval(PARTITIONS) == 0
    assert await db.fetchval("SELECT count(*) FROM usage_event_keys") == 0
    assert await rollups(db) == kept
