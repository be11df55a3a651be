"""`meter aggregate --once --processes N`: N processes drain disjoint shards, exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import psutil
from redis.asyncio import Redis

from aggregator import queries
from aggregator.flush import FOLD_LOCK_KEY
from meter.config import Settings
from meter.redis_keys import shard_of
from tests.integration.aggregator.conftest import (
    Client,
    make_events,
    post_events,
    rollups,
    start_aggregate,
    stream_events,
    stream_lengths,
)
from tests.unit.aggregator.reference import reference


async def drain(settings: Settings, *args: str) -> tuple[int, str]:
    proc = await start_aggregate(settings, "--once", *args, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_parts_drain_every_shard_once(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    await post_events(client, api_key, make_events(600, seed=7))
    accepted = await stream_events(redis, settings)
    assert min(await stream_lengths(redis, settings)) > 0  # every part has work

    code, out = await drain(settings, "--processes", "3", "--batch-size", "40")

    assert code == 0
    *parts, total = out.strip().splitlines()
    # Each part drained exactly its own shards (the i-th: those ≡ i mod 3)...
    drained = [re.fullmatch(r"part (\d) of 3: (\d+) event\(s\) from shards (.*)", p) for p in parts]
    assert all(drained)
    shards = {int(m[1]) - 1: [int(s) for s in m[3].split(", ")] for m in drained if m}
    assert shards == {i: list(range(i, settings.shards, 3)) for i in range(3)}
    # ...and the parent adds up its parts: every event once, none twice.
    assert sum(int(m[2]) for m in drained if m) == len(accepted)
    assert total == f"aggregated {len(accepted)} event(s)"
    assert await stream_lengths(redis, settings) == [0] * settings.shards
    assert await rollups(db) == reference(accepted)
    assert await db.fetchval("SELECT count(*) FROM usage_events") == len(accepted)


def events_of_part(index: int, shards: int, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` events (tenant acme) on the shards of part `index` (from 0) of 2."""
    events = make_events(40 * count, seed=seed)
    return [e for e in events if shard_of("acme", e["id"], shards) % 2 == index][:count]


async def test_a_part_that_dies_leaves_its_shards_while_the_other_finishes(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    # Part 2 of 2 (odd shards) gets 40 events: at most 40/20 + shards/2 batches (4 with the
    # tests' 4 shards), so it never reaches the fault's 12th commit. Part 1 (even shards) gets
    # 800 events, ~20 batches on each of its two shards, and is killed (SIGKILL) right after its
    # 12th commit, before that batch's XTRIM: never its shard's last batch, so the second drain
    # has entries after it to fold and trims the killed batch's with them.
    await post_events(client, api_key, events_of_part(0, settings.shards, 800, seed=8))
    await post_events(client, api_key, events_of_part(1, settings.shards, 40, seed=18))
    accepted = await stream_events(redis, settings)

    code, out = await drain(settings, "--processes", "2", "--batch-size", "20", "--fault",
                            "after_commit:12")  # fmt: skip
    assert code == 1
    assert "aggregated" not in out  # no total: it would not be the whole drain
    assert out.startswith("part 2 of 2: ")  # the part that finished still says what it did
    lengths = await stream_lengths(redis, settings)
    assert all(length == 0 for length in lengths[1::2])  # the surviving part drained its shards
    assert sum(lengths[0::2]) > 0  # the dead part's shards wait

    code, _ = await drain(settings, "--processes", "2")
    assert code == 0
    assert await stream_lengths(redis, settings) == [0] * settings.shards
    assert await rollups(db) == reference(accepted)


async def test_sigterm_stops_the_parts_too(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    await post_events(client, api_key, make_events(300, seed=10))
    accepted = await stream_events(redis, settings)
    async with held_drain(settings, db) as (parent, parts):
        parent.terminate()
        assert await asyncio.wait_for(parent.wait(), 60) == 1
        # Gone while still waiting for the lock: stopped, not finished.
        _, alive = await asyncio.to_thread(psutil.wait_procs, parts, 60)
        assert alive == []
    assert sum(await stream_lengths(redis, settings)) == len(accepted)

    code, _ = await drain(settings, "--processes", "2")
    assert code == 0
    assert await rollups(db) == reference(accepted)


async def test_parts_whose_parent_is_killed_finish_their_shards_and_exit(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    await post_events(client, api_key, make_events(300, seed=9))
    accepted = await stream_events(redis, settings)
    async with held_drain(settings, db, release_early=True) as (parent, parts):
        os.kill(parent.pid, signal.SIGKILL)
        await parent.wait()
    # Lock released: the orphaned parts go on with their drains.
    _, alive = await asyncio.to_thread(psutil.wait_procs, parts, 60)
    for proc in alive:
        proc.kill()
    assert alive == []
    assert await stream_lengths(redis, settings) == [0] * settings.shards
    assert await rollups(db) == reference(accepted)


@contextlib.asynccontextmanager
async def held_drain(
    settings: Settings, db: asyncpg.Connection, *, release_early: bool = False
) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[psutil.Process]]]:
    """A `--once --processes 2` drain whose parts are held at their first flush while the
    block runs: `db` holds the fold lock, which every flush takes shared, until the block ends.
    Yields the parent and its child processes. Whatever still runs after the block is killed,
    unless `release_early`, which leaves it to the test."""
    parent = await start_aggregate(settings, "--once", "--processes", "2")
    parts: list[psutil.Process] = []
    try:
        async with db.transaction():
            await db.execute(queries.LOCK_FOLD_EXCLUSIVE, FOLD_LOCK_KEY)
            for _ in range(1200):  # the parts start (spawn, imports), then their lanes block
                if await db.fetchval(WAITING_FOR_FOLD_LOCK) >= 2:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the parts never reached their first flush")
            parts = psutil.Process(parent.pid).children(recursive=True)
            yield parent, parts
    except BaseException:
        release_early = False
        raise
    finally:
        if not release_early:
            for proc in parts:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
        if parent.returncode is None:
            parent.kill()
            await parent.wait()


WAITING_FOR_FOLD_LOCK = """
SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (
    SELECT oid FROM pg_database WHERE datname = current_database()
)
"""


async def test_processes_needs_once(settings: Settings) -> None:
    proc = await start_aggregate(settings, "--processes", "2", stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode != 0
    assert b"--processes needs --once" in err
