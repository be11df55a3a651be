"""The dedupe probe looks each key up in the index, whatever the planner's statistics say.

Postgres plans the probe when it first runs on a connection and then keeps that plan. Planned
while usage_event_keys was small (a fresh install, or statistics taken then), a sequential scan
of the keys per batch row looks cheapest — and stays cached while the table grows to millions
of keys, making every batch read the whole table once per event."""

from __future__ import annotations

import asyncpg
import pytest
from redis.asyncio import Redis

from aggregator import queries
from aggregator.attribution import NullAttributor
from aggregator.flush import flush_shard
from meter.config import Settings
from meter.redis_keys import Keys
from tests.integration.aggregator.conftest import (
    Client,
    make_events,
    post_events,
    rollups,
    stream_events,
)
from tests.unit.aggregator.reference import reference

KEY_SCANS = """
SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'usage_event_keys'
"""


@pytest.mark.parametrize("raw_log", [True, False])
async def test_the_probe_never_scans_a_small_key_table(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    database_url: str,
    db: asyncpg.Connection,
    raw_log: bool,
) -> None:
    await db.execute(
        "INSERT INTO usage_event_keys (key) SELECT sha256(i::text::bytea) "
        "FROM generate_series(1, 60) AS i"
    )
    await db.execute("ANALYZE usage_event_keys")
    await post_events(client, api_key, make_events(400, seed=11))
    accepted = await stream_events(redis, settings)

    conn = await asyncpg.connect(database_url)
    try:
        # As the worker prepares its flush connections.
        await conn.execute(queries.CREATE_BATCH_TABLE)
        async with conn.transaction():
            await conn.execute(queries.PRIME_BATCH_TABLE)
        # One outer transaction, so that pg_stat_xact_user_tables counts every scan the
        # flushes made (each flush's own transaction becomes a savepoint inside it).
        async with conn.transaction():
            for shard in range(settings.shards):
                await flush_shard(
                    conn,
                    redis,
                    Keys(settings.redis_prefix),
                    shard,
                    batch_size=5000,
                    attributor=NullAttributor(),
                    known_days=set(),
                    raw_log=raw_log,
                )
            scans = await conn.fetchrow(KEY_SCANS)
    finally:
        await conn.close()
    assert scans is not None
    assert scans["seq_scan"] == 0
    assert scans["idx_scan"] >= len(accepted)  # one lookup per event
    assert await rollups(db) == reference(accepted)


async def test_the_probe_is_not_jit_compiled(db: asyncpg.Connection) -> None:
    """Disabling sequential scans gives the batch table's scan a huge nominal cost; without
    jit = off Postgres would JIT-compile the probe (tens of milliseconds) on every batch."""
    if not await db.fetchval("SELECT pg_jit_available()"):
        pytest.skip("this Postgres server has no JIT, so there is nothing to turn off")
    await db.execute(queries.CREATE_BATCH_TABLE)
    async with db.transaction():
        await db.execute(queries.PRIME_BATCH_TABLE)
    async with db.transaction():
        await db.execute(queries.INDEX_PROBE)
        plan = await db.fetchval("EXPLAIN (FORMAT JSON) " + queries.INSERT_NEW_EVENTS)
    assert '"Index Only Scan"' in plan or '"Index Scan"' in plan
    assert "JIT" not in plan
