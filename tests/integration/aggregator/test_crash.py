"""kill -9 the aggregator process at chosen and at arbitrary points; totals stay exact."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
from redis.asyncio import Redis

from meter.config import Settings
from meter.events import UsageEvent
from tests.integration.aggregator.conftest import (
    Client,
    make_events,
    post_events,
    rollups,
    start_aggregate,
    stream_events,
    stream_lengths,
    unique_totals,
)
from tests.unit.aggregator.reference import reference, reference_unique


async def aggregate(settings: Settings, *args: str) -> asyncio.subprocess.Process:
    return await start_aggregate(settings, "--once", *args)


async def test_kill_9_anywhere_never_loses_or_double_counts(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO meter_definitions (tenant, meter, aggregation, unique_property)"
        " VALUES ('acme', 'seats', 'unique_count', 'user')"
    )
    accepted: list[UsageEvent] = []
    # Crash points hit by a fault hook: inside the transaction, between commit and XTRIM, after.
    faults = [
        "after_commit:2",
        "before_commit:3",
        "after_trim:2",
        "after_commit:1",
        "before_commit:1",
    ]
    for round_, fault in enumerate(faults):
        # Events keep flowing between crashes.
        await post_events(client, api_key, make_events(150, seed=100 + round_))
        accepted += await stream_events(redis, settings)
        proc = await aggregate(settings, "--batch-size", "20", "--fault", fault)
        assert await proc.wait() == -signal.SIGKILL, fault

    # An arbitrary point: kill -9 from outside as soon as the process has committed something.
    await post_events(client, api_key, make_events(400, seed=200))
    accepted += await stream_events(redis, settings)
    progress = await db.fetchval("SELECT max(updated_at) FROM stream_checkpoints")
    proc = await aggregate(settings, "--batch-size", "5")
    for _ in range(2000):
        if await db.fetchval("SELECT max(updated_at) FROM stream_checkpoints") != progress:
            break
        await asyncio.sleep(0.005)
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()

    # Restart without faults: it drains the rest.
    proc = await aggregate(settings, "--batch-size", "50")
    assert await proc.wait() == 0

    assert await stream_lengths(redis, settings) == [0] * settings.shards
    assert await rollups(db) == reference(accepted)
    unique = {("acme", "seats"): "user"}
    assert await unique_totals(db) == reference_unique(accepted, unique)
    assert await db.fetchval("SELECT count(*) FROM usage_events") == len({e.id for e in accepted})
