"""kill -9 the evaluator process at each of its crash points: every threshold and the limit fire
exactly once, and the block is in Redis once an evaluation completes."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time

import asyncpg
from redis.asyncio import Redis

from meter.config import Settings
from meter.redis_keys import Keys
from tests.integration.alerts.conftest import (
    DAY,
    Client,
    calls,
    create_rule,
    drain,
    post_events,
    seed,
    start_evaluate,
    webhook_events,
)


async def test_kill_9_at_each_point_gives_one_event_per_threshold(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    start = int(time.time()) - DAY
    for n in (1, 2, 3):
        await seed(db, (start, start + 30 * DAY), external_id=f"c-{n}")
    await create_rule(
        client, api_key, meter="calls", kind="units", thresholds=[10, 20], hard_limit=True
    )
    await post_events(
        client, api_key, calls("c-1", "a", [15]) + calls("c-2", "b", [25]) + calls("c-3", "c", [5])
    )
    await drain(settings, redis)
    # Each run dies at the n-th evaluation's point: inside the transaction (rolled back), then
    # between the commit and the Redis block, at several customers.
    for fault in ("before_commit:1", "after_commit:1", "before_commit:2", "after_commit:2"):
        proc = await start_evaluate(settings, "--once", "--fault", fault)
        assert await proc.wait() == -signal.SIGKILL, fault
    proc = await start_evaluate(settings, "--once")
    assert await proc.wait() == 0, await proc.stderr.read() if proc.stderr else b""
    fired = await webhook_events(db)
    ids = [e[0] for e in fired]
    assert len(ids) == len(set(ids))
    assert sorted((e[2], e[3]["customer"], e[3].get("threshold")) for e in fired) == [
        ("usage.limit_reached", "c-2", "20"),
        ("usage.threshold_crossed", "c-1", "10"),
        ("usage.threshold_crossed", "c-2", "10"),
        ("usage.threshold_crossed", "c-2", "20"),
    ]
    assert await db.fetchval("SELECT count(*) FROM alert_firings") == 3
    held = await redis.hgetall(Keys(settings.redis_prefix).limits("acme"))
    assert sorted(held) == [b"c-2\x1fcalls", b"cus_c-2\x1fcalls"]


async def test_kill_9_at_random_moments_neither_duplicates_nor_misses(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    rng = random.Random(7)
    start = int(time.time()) - DAY
    customers = [f"r-{n}" for n in range(12)]
    for customer in customers:
        await seed(db, (start, start + 30 * DAY), external_id=customer)
    await create_rule(client, api_key, meter="calls", kind="units", thresholds=[1, 2, 3, 4])
    await post_events(
        client, api_key, [e for c in customers for e in calls(c, c, [rng.randint(1, 5)])]
    )
    await drain(settings, redis)
    for _ in range(4):
        proc = await start_evaluate(settings, "--once")
        await asyncio.sleep(rng.uniform(0.5, 3.0))
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    proc = await start_evaluate(settings, "--once")
    assert await proc.wait() == 0
    fired = await webhook_events(db)
    expected = sorted(
        (r["customer"], str(t))
        for r in await db.fetch("SELECT customer, value_sum FROM usage_totals")
        for t in range(1, 5)
        if r["value_sum"] >= t
    )
    assert sorted((e[3]["customer"], e[3]["threshold"]) for e in fired) == expected
    assert len({e[0] for e in fired}) == len(fired)
