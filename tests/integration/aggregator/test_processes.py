"""`meter aggregate --once --processes N`: N processes drain disjoint shards, exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal

import asyncpg
import psutil
from redis.asyncio import Redis

from aggregator import queries
from aggregator.flush import FOLD_LOCK_KEY
from meter.config import Settings
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


async def test_a_part_that_dies_fails_the_drain_and_the_next_run_finishes_it(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    await post_events(client, api_key, make_events(400, seed=8))
    accepted = await stream_events(redis, settings)

    # Every part is killed (SIGKILL) right after its second commit, before its XTRIM.
    code, out = await drain(settings, "--processes", "2", "--batch-size", "20", "--fault",
                            "after_commit:2")  # fmt: skip
    assert code == 1
    assert "aggregated" not in out
    assert sum(await stream_lengths(redis, settings)) > 0

    code, _ = await drain(settings, "--processes", "2")
    assert code == 0
    assert await stream_lengths(redis, settings) == [0] * settings.shards
    assert await rollups(db) == reference(accepted)


async def test_parts_whose_parent_is_killed_finish_their_shards_and_exit(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    await post_events(client, api_key, make_events(300, seed=9))
    accepted = await stream_events(redis, settings)
    parent = await start_aggregate(settings, "--once", "--processes", "2")
    parts: list[psutil.Process] = []
    try:
        async with db.transaction():
            # Hold the parts at their first flush: every flush takes this lock shared.
            await db.execute(queries.LOCK_FOLD_EXCLUSIVE, FOLD_LOCK_KEY)
            for _ in range(1200):  # the parts start (spawn, imports) and their lanes block
                if await db.fetchval(WAITING_FOR_FOLD_LOCK) >= 2:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the parts never reached their first flush")
            parts = psutil.Process(parent.pid).children(recursive=True)
            os.kill(parent.pid, signal.SIGKILL)
            await parent.wait()
        # Lock released: the orphaned parts go on with their drains.
        _, alive = await asyncio.to_thread(psutil.wait_procs, parts, 120)
    finally:
        for proc in parts:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
    assert alive == []
    assert await stream_lengths(redis, settings) == [0] * settings.shards
    assert await rollups(db) == reference(accepted)


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
