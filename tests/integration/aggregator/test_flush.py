"""The aggregator against real Postgres and Redis: exactly once, every aggregation, late events."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
from redis.asyncio import Redis

from aggregator import queries
from aggregator.attribution import NullAttributor
from aggregator.flush import CheckpointMoved, flush_shard
from aggregator.metrics import AggregatorMetrics
from aggregator.worker import Worker
from meter import wiring
from meter.config import Settings
from meter.redis_keys import Keys, shard_of
from tests.integration.aggregator.conftest import (
    HOUR_MS,
    Client,
    make_events,
    now_ms,
    post_events,
    rollups,
    stream_events,
    stream_lengths,
    unique_totals,
)
from tests.unit.aggregator.reference import reference, reference_unique

UNIQUE = {("acme", "seats"): "user"}


async def drain(settings: Settings, redis: Redis, **kw: object) -> int:
    kw.setdefault("attributor", wiring.attributor())
    async with Worker(settings, redis, **kw) as worker:  # type: ignore[arg-type]
        return await worker.drain()


async def test_once_drains_every_shard_and_trims_the_streams(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    await post_events(client, api_key, make_events(600, seed=1))
    accepted = await stream_events(redis, settings)
    assert len(accepted) == 600

    folded = await drain(settings, redis, batch_size=64)

    assert folded == 600
    assert await stream_lengths(redis, settings) == [0] * settings.shards
    assert await rollups(db) == reference(accepted)
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 600
    assert await db.fetchval("SELECT count(*) FROM usage_event_keys") == 600
    checkpoints = await db.fetch("SELECT stream, last_id FROM stream_checkpoints")
    assert len(checkpoints) == settings.shards
    assert all(r["last_id"] != "0-0" for r in checkpoints)
    # Nothing left: a second drain folds nothing.
    assert await drain(settings, redis) == 0


async def test_redelivered_entries_are_folded_once(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    """A crash after commit but before XTRIM, with the checkpoint also lost: the same entries
    are read again. Postgres (usage_event_keys) drops every one of them."""
    await post_events(client, api_key, make_events(300, seed=2))
    keys = Keys(settings.redis_prefix)
    saved = {s: await redis.xrange(keys.stream(s)) for s in range(settings.shards)}
    accepted = await stream_events(redis, settings)
    await drain(settings, redis, batch_size=50)
    expected = await rollups(db)
    assert expected == reference(accepted)
    versions = await db.fetchval("SELECT sum(version) FROM usage_rollups")

    for shard, entries in saved.items():
        for _, fields in entries:
            await redis.xadd(keys.stream(shard), fields)
    await db.execute("UPDATE stream_checkpoints SET last_id = '0-0'")
    metrics = AggregatorMetrics()
    assert await drain(settings, redis, batch_size=50, metrics=metrics) == 0

    assert await rollups(db) == expected
    assert await db.fetchval("SELECT sum(version) FROM usage_rollups") == versions
    dropped = sum(
        metrics.registry.get_sample_value("meter_aggregator_duplicates_total", {"shard": str(s)})
        or 0
        for s in range(settings.shards)
    )
    assert dropped == 300
    assert await stream_lengths(redis, settings) == [0] * settings.shards


async def test_a_duplicate_past_redis_dedupe_is_dropped_by_postgres(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    event = {"id": "dup-1", "customer": "cus_a", "meter": "calls", "value": 5}
    await post_events(client, api_key, [event])
    await drain(settings, redis)
    # The dedupe key is gone (evicted, flushed, TTL): ingest accepts the id a second time.
    keys = Keys(settings.redis_prefix)
    shard = shard_of("acme", "dup-1", settings.shards)
    assert await redis.delete(keys.dedupe(shard, "acme", "dup-1")) == 1
    await post_events(client, api_key, [{**event, "value": 50}])
    assert await stream_lengths(redis, settings) != [0] * settings.shards

    await drain(settings, redis)

    (row,) = await db.fetch("SELECT event_count, value_sum FROM usage_rollups")
    assert (row["event_count"], row["value_sum"]) == (1, Decimal(5))
    assert await stream_lengths(redis, settings) == [0] * settings.shards


async def test_each_aggregation_matches_the_reference(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    await db.executemany(
        "INSERT INTO meter_definitions (tenant, meter, aggregation, unique_property)"
        " VALUES ($1, $2, $3, $4)",
        [
            ("acme", "calls", "max", None),
            ("acme", "tokens", "last", None),
            ("acme", "seats", "unique_count", "user"),
        ],
    )
    events = make_events(400, seed=3)
    # Same timestamp, different ids: `last` breaks the tie by id.
    t = (now_ms() - 3 * HOUR_MS) / 1000
    events += [
        {"id": "tie-b", "customer": "cus_z", "meter": "tokens", "value": 2, "timestamp": t},
        {"id": "tie-a", "customer": "cus_z", "meter": "tokens", "value": 9, "timestamp": t},
    ]
    await post_events(client, api_key, events)
    accepted = await stream_events(redis, settings)
    await drain(settings, redis, batch_size=37)

    expected = reference(accepted)
    assert await rollups(db) == expected
    assert await unique_totals(db) == reference_unique(accepted, UNIQUE)
    values = await db.fetch(
        "SELECT customer, meter, subscription_item, bucket_start, aggregation, value"
        " FROM usage_rollup_values"
    )
    pick = {"calls": 3, "tokens": 3, "seats": None}
    agg = {"calls": "max", "tokens": "last", "seats": "unique_count"}
    for r in values:
        assert r["aggregation"] == agg[r["meter"]]
        index = pick[r["meter"]]
        if index is not None:
            key = ("acme", r["customer"], r["meter"], r["subscription_item"])
            start = int(r["bucket_start"].timestamp() * 1000)
            want = expected[(*key, start)][2 if r["meter"] == "calls" else 3]
            assert r["value"] == want
    tie = [r for r in values if r["customer"] == "cus_z"]
    assert [r["value"] for r in tie] == [Decimal(2)]  # "tie-b" > "tie-a"


async def test_late_events_update_their_own_hour_and_bump_its_version(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    now = now_ms()
    old_hour = (now - 30 * HOUR_MS) // HOUR_MS * HOUR_MS
    recent = [
        {"id": f"r{i}", "customer": "cus_a", "meter": "calls", "timestamp": now / 1000 - i}
        for i in range(5)
    ]
    first_old = {"id": "o1", "customer": "cus_a", "meter": "calls", "timestamp": old_hour / 1000}
    await post_events(client, api_key, [*recent, first_old])
    await drain(settings, redis)
    before = {
        r["bucket_start"]: r
        for r in await db.fetch(
            "SELECT bucket_start, version, updated_at, event_count FROM usage_rollups"
        )
    }

    late = {"id": "late", "customer": "cus_a", "meter": "calls", "timestamp": old_hour / 1000 + 60}
    await post_events(client, api_key, [late])
    await drain(settings, redis)

    after = {
        r["bucket_start"]: r
        for r in await db.fetch(
            "SELECT bucket_start, version, updated_at, event_count FROM usage_rollups"
        )
    }
    assert before.keys() == after.keys()
    changed = [k for k in after if after[k]["version"] != before[k]["version"]]
    assert [int(k.timestamp() * 1000) for k in changed] == [old_hour]
    (k,) = changed
    assert (after[k]["version"], after[k]["event_count"]) == (2, 2)
    assert after[k]["updated_at"] > before[k]["updated_at"]


async def test_concurrent_flushes_of_one_shard_never_double_count(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    database_url: str,
    db: asyncpg.Connection,
) -> None:
    """Leases bypassed on purpose: two connections flush the same shards at the same time. The
    checkpoint compare-and-set lets exactly one of each racing pair commit."""
    await post_events(client, api_key, make_events(500, seed=4))
    accepted = await stream_events(redis, settings)
    keys = Keys(settings.redis_prefix)
    conns = [await asyncpg.connect(database_url) for _ in range(2)]
    conflicts = 0
    try:
        for conn in conns:
            await conn.execute(queries.CREATE_BATCH_TABLE)
        days: list[set[object]] = [set(), set()]

        async def one(i: int, shard: int) -> int:
            nonlocal conflicts
            try:
                r = await flush_shard(
                    conns[i],
                    redis,
                    keys,
                    shard,
                    batch_size=20,
                    attributor=NullAttributor(),
                    known_days=days[i],  # type: ignore[arg-type]
                )
            except CheckpointMoved:
                conflicts += 1
                return 1
            return r.read

        for shard in range(settings.shards):
            while True:
                reads = await asyncio.gather(one(0, shard), one(1, shard))
                if not any(reads):
                    break
    finally:
        for conn in conns:
            await conn.close()
    assert conflicts > 0  # the race did happen
    assert await rollups(db) == reference(accepted)
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 500
