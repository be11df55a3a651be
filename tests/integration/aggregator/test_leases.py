"""Shard leases: N workers split the shards, never share one, and take over a dead one's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
from redis.asyncio import Redis

from aggregator.leases import lock_class
from aggregator.worker import Worker
from meter import wiring
from meter.config import Settings
from tests.integration.aggregator.conftest import (
    Client,
    make_events,
    post_events,
    rollups,
    stream_events,
    stream_lengths,
)
from tests.unit.aggregator.reference import reference

HELD = """
SELECT objid::int AS shard, count(*) AS holders FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1::bigint::oid
GROUP BY objid
"""


def lag_shards(worker: Worker) -> set[int]:
    """The shards this worker's lag gauge has a series for."""
    return {
        int(sample.labels["shard"])
        for metric in worker.metrics.lag_seconds.collect()
        for sample in metric.samples
    }


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait for a condition; fails (not a timing assert) if it never comes."""
    for _ in range(400):
        if check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"never happened: {what}")


async def test_workers_split_shards_and_take_over_from_a_dead_one(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    fast = settings.replace(aggregator_lease_interval_s=0.05, aggregator_poll_interval_s=0.02)
    await post_events(client, api_key, make_events(300, seed=5))
    accepted = await stream_events(redis, settings)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    a, b = (
        Worker(fast, redis, batch_size=25, attributor=wiring.attributor()),
        Worker(fast, redis, batch_size=25, attributor=wiring.attributor()),
    )
    await a.__aenter__()
    await b.__aenter__()
    run_a = asyncio.create_task(a.run(stop_a, scheduled_jobs=False))
    run_b = asyncio.create_task(b.run(stop_b))
    try:
        # Split: 2 + 2 of 4 shards, disjoint.
        await until(lambda: len(a.leases.held) == 2 and len(b.leases.held) == 2, "an even split")
        assert not a.leases.held & b.leases.held
        holders = await db.fetch(HELD, lock_class(settings.redis_prefix, "shard"))
        assert sorted(r["shard"] for r in holders) == [0, 1, 2, 3]
        assert all(r["holders"] == 1 for r in holders)

        # A dies (its connections drop, as with kill -9): B takes all four.
        stop_a.set()
        await run_a
        await a.close()
        await until(lambda: len(b.leases.held) == 4, "takeover of the dead worker's shards")

        # More events while only B runs; everything is folded exactly once.
        await post_events(client, api_key, make_events(200, seed=6))
        accepted += await stream_events(redis, settings)
        for _ in range(400):
            if await stream_lengths(redis, settings) == [0] * settings.shards:
                break
            await asyncio.sleep(0.025)
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.gather(run_a, run_b)
        await a.close()
        await b.close()
    assert await rollups(db) == reference(accepted)
    # B's scheduler ran the maintenance job: partitions exist ahead of today.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_events'::regclass"
        )
        >= 5
    )


async def test_a_shard_given_up_stops_reporting_lag_here(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    """A alone holds and reports all four shards; B joins and takes two. A must drop their lag
    series: a frozen last value would keep a lag alert firing (or hide B's real lag)."""
    fast = settings.replace(aggregator_lease_interval_s=0.05, aggregator_poll_interval_s=0.02)
    await post_events(client, api_key, make_events(100, seed=7))
    stop = asyncio.Event()
    a, b = (
        Worker(fast, redis, batch_size=25, attributor=wiring.attributor()),
        Worker(fast, redis, batch_size=25, attributor=wiring.attributor()),
    )
    await a.__aenter__()
    tasks = [asyncio.create_task(a.run(stop, scheduled_jobs=False))]
    try:
        await until(lambda: lag_shards(a) == {0, 1, 2, 3}, "A reports every shard")
        await b.__aenter__()
        tasks.append(asyncio.create_task(b.run(stop, scheduled_jobs=False)))
        await until(lambda: len(a.leases.held) == 2 == len(b.leases.held), "an even split")
        await until(lambda: lag_shards(a) == a.leases.held, "A reports only what it holds")
        await until(lambda: lag_shards(b) == b.leases.held, "B reports what it took")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await a.close()
        await b.close()
