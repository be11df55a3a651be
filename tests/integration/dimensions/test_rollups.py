"""Rollups per combination of dimension values, exactly once: the guard under kill -9, voids,
re-attribution and a change of dimensions mid-way. The oracle is the test's own fold of the
accepted events (the stream order, one shard), never the aggregator's code."""

from __future__ import annotations

import dataclasses
import json
import signal
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from aggregator.attribution import ItemPeriod
from aggregator.reattribute import reattribute
from aggregator.windows import Window, to_datetime
from aggregator.worker import Worker
from meter import wiring
from meter.config import Settings
from meter.events import UsageEvent
from reporter.voids import void_event
from tests.conftest import start_client
from tests.integration.aggregator.conftest import (
    HOUR_MS,
    Client,
    PeriodsAttributor,
    env_for,
    now_ms,
    post_events,
    start_aggregate,
    stream_events,
    stream_lengths,
)

LIMIT = 3


@pytest.fixture
def one_shard(settings: Settings) -> Settings:
    """One stream: its order is the total order the guard decides in, so the test can too."""
    return dataclasses.replace(settings, shards=1, dimension_combinations=LIMIT)


@pytest.fixture
async def client1(one_shard: Settings) -> AsyncIterator[Client]:
    c = await start_client(one_shard)
    yield c
    await c.close()


async def _declare(db: asyncpg.Connection, meter: str, keys: list[str], at_ms: int) -> None:
    await db.execute(
        "INSERT INTO meter_dimensions (tenant, meter, effective_from, keys) VALUES ('acme', $1,"
        " $2, $3)",
        meter,
        to_datetime(at_ms),
        keys,
    )


def _combo(props: dict[str, Any] | None, keys: list[str]) -> str:
    """The test's own rendering of a combination: missing or null → none."""
    p = props or {}
    return json.dumps(
        {k: (p.get(k) if p.get(k) is not None else "none") for k in sorted(keys)},
        separators=(",", ":"),
    )


def _reference(
    accepted: list[UsageEvent], keys: list[str], limit: int
) -> dict[tuple[str, str, str], Decimal]:
    """(customer, meter, combination) → sum, folding first occurrences in stream order, with
    the guard as docs/dimensions.md states it (one set per customer and meter here)."""
    seen: set[str] = set()
    sets: dict[tuple[str, str], set[str]] = {}
    out: dict[tuple[str, str, str], Decimal] = {}
    for e in accepted:
        if e.id in seen:
            continue
        seen.add(e.id)
        c = _combo(e.properties, keys)
        held = sets.setdefault((e.customer, e.meter), set())
        if c not in held:
            if len(held) < limit:
                held.add(c)
            else:
                c = "_other"
        k = (e.customer, e.meter, c)
        out[k] = out.get(k, Decimal(0)) + Decimal(e.value)
    return out


async def _by_combination(db: asyncpg.Connection) -> dict[tuple[str, str, str], Decimal]:
    rows = await db.fetch(
        "SELECT customer, meter, dims, sum(value_sum) AS v FROM usage_rollups"
        " GROUP BY customer, meter, dims"
    )
    return {(r["customer"], r["meter"], r["dims"]): r["v"] for r in rows}


def _events(n: int, seed: int, base_ms: int) -> list[dict[str, Any]]:
    import random

    rng = random.Random(seed)
    return [
        {
            "id": f"d{seed}-{i}",
            "customer": rng.choice(["cus_a", "cus_b"]),
            "meter": "tokens",
            "value": rng.choice([1, 2, 5, 10]),
            "timestamp": (base_ms + rng.randrange(3 * HOUR_MS)) / 1000,
            "properties": {
                k: v
                for k, v in (
                    ("model", rng.choice(["small", "large", "xl", None])),
                    ("region", rng.choice(["eu", "us"])),
                )
                if v is not None
            },
        }
        for i in range(n)
    ]


async def test_the_guard_decides_the_same_across_kill_9(
    client1: Client, api_key: str, redis: Redis, one_shard: Settings, db: asyncpg.Connection
) -> None:
    base = now_ms() - 4 * HOUR_MS
    await _declare(db, "tokens", ["model", "region"], base - HOUR_MS)
    env = env_for(one_shard, METER_DIMENSION_COMBINATIONS=str(LIMIT))
    accepted: list[UsageEvent] = []
    for round_, fault in enumerate(["before_commit:2", "after_commit:2", "before_commit:1"]):
        await post_events(client1, api_key, _events(120, seed=round_, base_ms=base))
        # A retry of some of them: duplicates go through the guard and the dedupe.
        await post_events(client1, api_key, _events(120, seed=round_, base_ms=base)[:10])
        accepted += await stream_events(redis, one_shard)
        proc = await start_aggregate(
            one_shard, "--once", "--batch-size", "17", "--fault", fault, env=env
        )
        assert await proc.wait() == -signal.SIGKILL
    proc = await start_aggregate(one_shard, "--once", "--batch-size", "50", env=env)
    assert await proc.wait() == 0
    assert await stream_lengths(redis, one_shard) == [0]

    expected = _reference(accepted, ["model", "region"], LIMIT)
    assert any(c == "_other" for _, _, c in expected)  # the guard is exercised
    assert await _by_combination(db) == expected
    # Each raw event records the combination it was folded into.
    raw = await db.fetch(
        "SELECT customer, meter, dims, sum(value) AS v FROM usage_events GROUP BY 1, 2, 3"
    )
    assert {(r["customer"], r["meter"], r["dims"]): r["v"] for r in raw} == expected
    sizes = await db.fetch(
        "SELECT customer, count(*) AS n FROM usage_dimension_combos GROUP BY customer"
    )
    assert all(r["n"] == LIMIT for r in sizes)


async def test_a_change_of_dimensions_applies_from_its_moment_by_event_time(
    client1: Client, api_key: str, redis: Redis, one_shard: Settings, db: asyncpg.Connection
) -> None:
    hour = now_ms() // HOUR_MS * HOUR_MS - 3 * HOUR_MS
    await _declare(db, "tokens", ["model"], hour)
    await _declare(db, "tokens", ["region"], hour + HOUR_MS)
    await _declare(db, "tokens", [], hour + 2 * HOUR_MS)
    events = [
        {"id": f"c{i}", "customer": "cus_a", "meter": "tokens", "value": 1,
         "timestamp": (hour + i * HOUR_MS + 60_000) / 1000,
         "properties": {"model": "large", "region": "eu"}}
        for i in range(3)
    ]  # fmt: skip
    # Newest first: arrival order does not matter, the event time does.
    await post_events(client1, api_key, events[::-1])
    async with Worker(one_shard, redis, attributor=PeriodsAttributor()) as worker:
        await worker.drain()
    assert await _by_combination(db) == {
        ("cus_a", "tokens", '{"model":"large"}'): 1,
        ("cus_a", "tokens", '{"region":"eu"}'): 1,
        ("cus_a", "tokens", ""): 1,
    }


async def test_void_and_reattribution_keep_each_event_in_its_combination(
    client1: Client, api_key: str, redis: Redis, one_shard: Settings, db: asyncpg.Connection
) -> None:
    hour = now_ms() // HOUR_MS * HOUR_MS - 2 * HOUR_MS
    await _declare(db, "tokens", ["model"], hour - HOUR_MS)
    models = ["a", "b", "c", "d", "a", "e"]  # limit 3: d and e go to _other
    events = [
        {"id": f"v{i}", "customer": "cus_a", "meter": "tokens", "value": 10 + i,
         "timestamp": (hour + 60_000 + i * 1000) / 1000, "properties": {"model": m}}
        for i, m in enumerate(models)
    ]  # fmt: skip
    await post_events(client1, api_key, events)
    attributor = PeriodsAttributor()
    async with Worker(one_shard, redis, attributor=attributor) as worker:
        await worker.drain()
    unattributed = await _by_combination(db)
    assert unattributed[("cus_a", "tokens", "_other")] == 13 + 15
    # The subscription appears: re-attribution rebuilds the hour into the item's buckets, the
    # guard deciding again for the item's period set (same events, same order: same answer).
    attributor.periods = [
        ItemPeriod("cus_a", "tokens", "si_1", Window(hour - HOUR_MS, hour + 10 * HOUR_MS))
    ]
    await reattribute(db, attributor, "acme", "cus_a", to_datetime(hour - 24 * HOUR_MS),
                      dimension_limit=LIMIT)  # fmt: skip
    rows = await db.fetch(
        "SELECT subscription_item, dims, value_sum FROM usage_rollups ORDER BY dims"
    )
    assert {(r["subscription_item"], r["dims"]): r["value_sum"] for r in rows} == {
        ("si_1", '{"model":"a"}'): 10 + 14,
        ("si_1", '{"model":"b"}'): 11,
        ("si_1", '{"model":"c"}'): 12,
        ("si_1", "_other"): 13 + 15,
    }
    # A void takes the event out of exactly the bucket it was folded into: `_other` for v3.
    await void_event(db, "acme", "v3", wiring.subtract_event())
    await void_event(db, "acme", "v1", wiring.subtract_event())
    after = await _by_combination(db)
    assert after[("cus_a", "tokens", "_other")] == 15
    assert after[("cus_a", "tokens", '{"model":"b"}')] == 0
    assert after[("cus_a", "tokens", '{"model":"a"}')] == 24
    assert await db.fetchval("SELECT sum(value_sum) FROM usage_totals") == 10 + 12 + 14 + 15
    assert len(await db.fetch("SELECT 1 FROM usage_rollups")) == 4
