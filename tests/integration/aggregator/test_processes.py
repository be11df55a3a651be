"""`meter aggregate --once --processes N`: N processes drain disjoint shards, exactly once."""

from __future__ import annotations

import asyncio
import sys

import asyncpg
from redis.asyncio import Redis

from meter.config import Settings
from tests.integration.aggregator.conftest import (
    Client,
    make_events,
    post_events,
    rollups,
    stream_events,
    stream_lengths,
)
from tests.integration.aggregator.test_crash import env_for
from tests.unit.aggregator.reference import reference


async def drain(settings: Settings, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aggregator",
        "aggregate",
        "--once",
        *args,
        env=env_for(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
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
    # The parent adds up its parts: every event once, none twice.
    assert out.strip() == f"aggregated {len(accepted)} event(s)"
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


async def test_processes_needs_once(settings: Settings) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aggregator",
        "aggregate",
        "--processes",
        "2",
        env=env_for(settings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode != 0
    assert b"--processes needs --once" in err
