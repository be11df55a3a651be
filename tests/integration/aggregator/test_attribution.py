"""Period-boundary splits and re-attribution of unattributed usage, without double counting."""

from __future__ import annotations

import datetime as dt

import asyncpg
from redis.asyncio import Redis

from aggregator.attribution import Attribution, ItemPeriod, attribute, index_periods
from aggregator.reattribute import reattribute, sweep
from aggregator.windows import Window
from aggregator.worker import Worker
from meter import wiring
from meter.config import Settings
from meter.events import UsageEvent
from tests.integration.aggregator.conftest import (
    HOUR_MS,
    Client,
    PeriodsAttributor,
    now_ms,
    post_events,
    rollups,
    stream_events,
    unique_totals,
)
from tests.unit.aggregator.reference import reference, reference_unique

SINCE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
UNIQUE = {("acme", "seats"): "user"}


def periods_around(boundary: int) -> list[ItemPeriod]:
    return [
        ItemPeriod(customer, meter, item, window)
        for customer in ("cus_a",)
        for meter in ("calls", "seats")
        for item, window in (
            (f"si_old_{meter}", Window(boundary - 30 * 24 * HOUR_MS, boundary)),
            (f"si_new_{meter}", Window(boundary, boundary + 30 * 24 * HOUR_MS)),
        )
    ]


def events_around(boundary: int, tag: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i, offset_min in enumerate((-95, -40, -29, -1, 0, 1, 17, 29, 75)):
        for customer in ("cus_a", "cus_b"):
            for meter in ("calls", "seats"):
                out.append(
                    {
                        "id": f"{tag}-{i}-{customer}-{meter}",
                        "customer": customer,
                        "meter": meter,
                        "value": i + 1,
                        "timestamp": (boundary + offset_min * 60_000) / 1000,
                        "properties": {"user": f"u{i % 3}"},
                    }
                )
    return out


async def test_period_boundary_splits_the_hour_and_reattribution_counts_once(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO meter_definitions (tenant, meter, aggregation, unique_property)"
        " VALUES ('acme', 'seats', 'unique_count', 'user')"
    )
    # A billing period ends half way through an hour ten hours ago.
    boundary = (now_ms() - 10 * HOUR_MS) // HOUR_MS * HOUR_MS + 30 * 60_000
    periods = periods_around(boundary)
    index = index_periods(periods)

    def attributed(e: UsageEvent) -> Attribution:
        return attribute(e.customer, e.meter, e.timestamp_ms, index)

    # 1. No billing data yet: everything lands in unattributed (null item) hour buckets.
    await post_events(client, api_key, events_around(boundary, "a"))
    accepted = await stream_events(redis, settings)
    async with Worker(settings, redis, attributor=wiring.attributor()) as worker:
        await worker.drain()
    assert await rollups(db) == reference(accepted)
    assert (
        await db.fetchval("SELECT count(*) FROM usage_rollups WHERE subscription_item IS NOT NULL")
        == 0
    )

    # 2. The subscriptions appear: re-attribution moves cus_a's usage, cus_b's stays.
    attributor = PeriodsAttributor(periods)
    moved = await reattribute(db, attributor, "acme", "cus_a", SINCE)
    assert moved == len([e for e in accepted if e.customer == "cus_a"])
    assert await rollups(db) == reference(accepted, attributed)
    assert await unique_totals(db) == reference_unique(accepted, UNIQUE, attributed)
    # The hour holding the boundary is two buckets, one per period.
    split = await db.fetch(
        "SELECT subscription_item, bucket_start, bucket_end FROM usage_rollups"
        " WHERE customer = 'cus_a' AND meter = 'calls'"
        " AND bucket_start >= $1 AND bucket_end <= $1 + interval '1 hour'",
        dt.datetime.fromtimestamp((boundary - 30 * 60_000) / 1000, dt.UTC),
    )
    assert sorted((r["subscription_item"], r["bucket_end"] - r["bucket_start"]) for r in split) == [
        ("si_new_calls", dt.timedelta(minutes=30)),
        ("si_old_calls", dt.timedelta(minutes=30)),
    ]

    # 3. Running it again, or the sweep, changes nothing.
    before = await rollups(db)
    assert await reattribute(db, attributor, "acme", "cus_a", SINCE) == 0
    assert await sweep(db, attributor, SINCE) == 0
    assert await rollups(db) == before

    # 4. New events, some late, now attributed at fold time; totals still match.
    await post_events(client, api_key, events_around(boundary, "b"))
    accepted += await stream_events(redis, settings)
    async with Worker(settings, redis, attributor=attributor) as worker:
        await worker.drain()
    assert await rollups(db) == reference(accepted, attributed)
    assert await unique_totals(db) == reference_unique(accepted, UNIQUE, attributed)
