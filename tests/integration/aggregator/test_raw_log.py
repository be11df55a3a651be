"""The raw log switched off (METER_RAW_LOG=0): nothing in usage_events, still exactly once.

Dedupe goes through usage_event_keys whether or not the raw log is written, so redelivered
entries, a duplicate that slipped past Redis and kill -9 between commit and XTRIM all still
fold every event exactly once.
"""

from __future__ import annotations

import signal

import asyncpg
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter import wiring
from meter.config import Settings
from meter.events import UsageEvent
from meter.redis_keys import Keys, shard_of
from tests.integration.aggregator.conftest import (
    Client,
    env_for,
    make_events,
    post_events,
    rollups,
    start_aggregate,
    stream_events,
    stream_lengths,
)
from tests.unit.aggregator.reference import reference


async def drain(settings: Settings, redis: Redis, **kw: object) -> int:
    kw.setdefault("attributor", wiring.attributor())
    async with Worker(settings.replace(raw_log=False), redis, **kw) as worker:  # type: ignore[arg-type]
        return await worker.drain()


def test_the_switch_reads_meter_raw_log() -> None:
    assert Settings.from_env({}).raw_log is True
    assert Settings.from_env({"METER_RAW_LOG": "0"}).raw_log is False
    assert Settings.from_env({"METER_RAW_LOG": "1"}).raw_log is True


async def test_raw_log_off_still_folds_redelivered_entries_once(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    await post_events(client, api_key, make_events(300, seed=21))
    keys = Keys(settings.redis_prefix)
    saved = {s: await redis.xrange(keys.stream(s)) for s in range(settings.shards)}
    accepted = await stream_events(redis, settings)

    assert await drain(settings, redis, batch_size=40) == 300
    expected = await rollups(db)
    assert expected == reference(accepted)
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 0
    assert await db.fetchval("SELECT count(*) FROM usage_event_keys") == 300
    versions = await db.fetchval("SELECT sum(version) FROM usage_rollups")

    # Crash after commit with the checkpoint lost too: every entry is read again.
    for shard, entries in saved.items():
        for _, fields in entries:
            await redis.xadd(keys.stream(shard), fields)
    await db.execute("UPDATE stream_checkpoints SET last_id = '0-0'")
    assert await drain(settings, redis, batch_size=40) == 0
    assert await rollups(db) == expected
    assert await db.fetchval("SELECT sum(version) FROM usage_rollups") == versions

    # A duplicate past Redis's dedupe (its key deleted) is dropped by Postgres.
    event = accepted[0]
    shard = shard_of(event.tenant, event.id, settings.shards)
    await redis.delete(keys.dedupe(shard, event.tenant, event.id))
    await post_events(client, api_key, [{"id": event.id, "customer": "cus_a", "meter": "calls"}])
    assert await stream_lengths(redis, settings) != [0] * settings.shards
    assert await drain(settings, redis) == 0
    assert await rollups(db) == expected
    assert await stream_lengths(redis, settings) == [0] * settings.shards


async def test_raw_log_off_survives_kill_9_between_commit_and_trim(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    env = env_for(settings, METER_RAW_LOG="0")
    accepted: list[UsageEvent] = []
    for round_, fault in enumerate(["after_commit:2", "before_commit:2", "after_commit:1"]):
        await post_events(client, api_key, make_events(120, seed=300 + round_))
        accepted += await stream_events(redis, settings)
        proc = await start_aggregate(
            settings, "--once", "--batch-size", "15", "--fault", fault, env=env
        )
        assert await proc.wait() == -signal.SIGKILL, fault
    proc = await start_aggregate(settings, "--once", env=env)
    assert await proc.wait() == 0

    assert await stream_lengths(redis, settings) == [0] * settings.shards
    assert await rollups(db) == reference(accepted)
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 0
    assert await db.fetchval("SELECT count(*) FROM usage_event_keys") == len(
        {e.id for e in accepted}
    )
