"""Partitions ahead of time; retention drops raw partitions and their ids, rollups stay."""

from __future__ import annotations

import asyncpg
import pytest
from redis.asyncio import Redis

from aggregator.maintenance import create_partitions, drop_old_partitions
from aggregator.worker import Worker
from meter import wiring
from meter.config import Settings
from tests.conftest import start_client
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


@pytest.mark.parametrize("late_window_s", [6 * 3600.0, 48 * 3600.0, 35 * 86400.0])
@pytest.mark.parametrize("raw_log", [True, False])
async def test_event_keys_outlive_every_retry_ingest_can_still_accept(
    api_key: str,
    redis: Redis,
    settings: Settings,
    db: asyncpg.Connection,
    late_window_s: float,
    raw_log: bool,
) -> None:
    """Redis forgets an id after METER_DEDUPE_WINDOW; from then on usage_event_keys alone keeps
    a retry from counting twice. So an event's key must stay while a retry of it can still be
    accepted: until its timestamp leaves the late window (a retry carries its event's timestamp;
    one that let it default is counted once for as long too, since that retry's own timestamp
    is later). Checked with the shortest retention allowed, events from the oldest the late
    window takes to the furthest ahead ingest takes, at every day offset in between."""
    configured = settings.replace(
        late_window_s=late_window_s,
        raw_retention_s=late_window_s + 86400.0,
        raw_log=raw_log,
        dedupe_window_s=60.0,
    )
    now = now_ms()
    late_ms, ahead_ms = int(late_window_s * 1000), int(configured.future_tolerance_s * 1000)
    stamps = [now - late_ms + 60_000, now + ahead_ms - 5_000]
    stamps += [now - late_ms + k * late_ms // 9 for k in range(1, 9)]
    events = [
        {"id": f"k{n}", "customer": "cus_a", "meter": "calls", "timestamp": ts / 1000}
        for n, ts in enumerate(stamps)
    ]
    client = await start_client(configured)
    try:
        await post_events(client, api_key, events)
    finally:
        await client.close()
    async with Worker(configured, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == len(events)

    async def has_key(event_id: str) -> bool:
        return bool(
            await db.fetchval(
                "SELECT EXISTS (SELECT 1 FROM usage_event_keys"
                " WHERE key = meter_event_key('acme', $1))",
                event_id,
            )
        )

    for event in sorted(events, key=lambda e: e["timestamp"]):
        # The last instant ingest accepts a retry of it: its timestamp + the late window.
        last_accepted = int(event["timestamp"] * 1000) + late_ms
        await drop_old_partitions(db, configured, at_ms=last_accepted)
        assert await has_key(event["id"]), event

    # Past retention the raw log's keys go with their partitions; without it they all stay.
    await drop_old_partitions(db, configured, at_ms=max(stamps) + late_ms + 3 * 86_400_000)
    remaining = await db.fetchval("SELECT count(*) FROM usage_event_keys")
    assert remaining == (0 if raw_log else len(events))
