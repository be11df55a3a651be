"""Helpers for aggregator tests: post events through the real ingest API, read rollups back."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import Collection, Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from aggregator.attribution import ItemPeriod
from aggregator.windows import to_ms
from meter.config import Settings
from meter.events import UsageEvent
from meter.redis_keys import Keys

Client = TestClient[object, object]
HOUR_MS = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


def make_events(n: int, seed: int, *, prefix: str = "e") -> list[dict[str, Any]]:
    """API event objects: a few customers and meters, out-of-order timestamps over ~30 h."""
    rng = random.Random(seed)
    base = now_ms() - 30 * HOUR_MS
    return [
        {
            "id": f"{prefix}{seed}-{i}",
            "customer": rng.choice(["cus_a", "cus_b", "cus_c"]),
            "meter": rng.choice(["calls", "tokens", "seats"]),
            "value": rng.choice([1, 2.5, 10, 0.01, 7]),
            "timestamp": (base + rng.randrange(29 * HOUR_MS)) / 1000,
            "properties": {"user": rng.choice(["u1", "u2", "u3", "u4", 5])},
        }
        for i in range(n)
    ]


async def post_events(client: Client, api_key: str, events: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(events), 500):
        response = await client.post(
            "/v1/events",
            data=orjson.dumps(list(events[start : start + 500])),
            headers={"Authorization": f"Bearer {api_key}"},
        )
        assert response.status == 200, await response.text()
        doc = await response.json()
        assert doc["rejected"] == 0, doc


async def stream_events(redis: Redis, settings: Settings) -> list[UsageEvent]:
    """Every event still in the streams, decoded."""
    keys = Keys(settings.redis_prefix)
    out: list[UsageEvent] = []
    for shard in range(settings.shards):
        for _, fields in await redis.xrange(keys.stream(shard)):
            out.append(UsageEvent.decode(fields[b"e"]))
    return out


async def stream_lengths(redis: Redis, settings: Settings) -> list[int]:
    keys = Keys(settings.redis_prefix)
    return [await redis.xlen(keys.stream(s)) for s in range(settings.shards)]


async def rollups(
    db: asyncpg.Connection,
) -> dict[tuple[str, str, str, str | None, int], tuple[int, Decimal, Decimal, Decimal]]:
    rows = await db.fetch(
        "SELECT tenant, customer, meter, subscription_item, bucket_start, event_count, value_sum,"
        " value_max, last_value FROM usage_rollups"
    )
    return {
        (
            r["tenant"],
            r["customer"],
            r["meter"],
            r["subscription_item"],
            to_ms(r["bucket_start"]),
        ): (
            r["event_count"],
            r["value_sum"],
            r["value_max"],
            r["last_value"],
        )
        for r in rows
    }


async def unique_totals(
    db: asyncpg.Connection,
) -> dict[tuple[str, str, str, str | None, int | None], int]:
    rows = await db.fetch(
        "SELECT tenant, customer, meter, subscription_item, period_start, sum(unique_count) AS n"
        " FROM usage_rollups GROUP BY 1, 2, 3, 4, 5 HAVING sum(unique_count) > 0"
    )
    return {
        (
            r["tenant"],
            r["customer"],
            r["meter"],
            r["subscription_item"],
            None if r["period_start"] is None else to_ms(r["period_start"]),
        ): int(r["n"])
        for r in rows
    }


class PeriodsAttributor:
    """Stands in for the billing module's subscription tables: answers from a list the test
    controls, so a test sets the periods without Stripe objects. Postgres and Redis stay real."""

    def __init__(self, periods: Sequence[ItemPeriod] = ()) -> None:
        self.periods = list(periods)

    async def item_periods(
        self, conn: asyncpg.Connection, tenant: str, customers: Collection[str]
    ) -> Sequence[ItemPeriod]:
        return [p for p in self.periods if p.customer in customers]


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of an aggregator process on this test's database and Redis prefix."""
    return {
        **os.environ,
        "METER_DATABASE_URL": settings.database_url,
        "METER_REDIS_URL": settings.redis_url,
        "METER_REDIS_PREFIX": settings.redis_prefix,
        "METER_SHARDS": str(settings.shards),
        "METER_LOG_LEVEL": "warning",
        **extra,
    }


async def start_aggregate(
    settings: Settings,
    *args: str,
    env: dict[str, str] | None = None,
    stdout: int = asyncio.subprocess.DEVNULL,
    stderr: int = asyncio.subprocess.DEVNULL,
) -> asyncio.subprocess.Process:
    """`meter aggregate *args` as a process of its own (so that it can be killed -9)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aggregator", "aggregate", *args,
        env=env or env_for(settings), stdout=stdout, stderr=stderr,
    )  # fmt: skip
