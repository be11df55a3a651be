"""Re-attribution of usage folded while the raw log was off (METER_RAW_LOG=0): nothing is lost.

Buckets whose events are not all in the raw log cannot be rebuilt from it; they move whole into
the item period that covers their hour, or stay unattributed when none does (and say so).
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest
from redis.asyncio import Redis

from aggregator.attribution import UNATTRIBUTED, Attribution, ItemPeriod, attribute, index_periods
from aggregator.reattribute import NoItemPeriod, Reattributed, reattribute, sweep
from aggregator.windows import Window, hour_of
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
from tests.integration.aggregator.test_attribution import events_around, periods_around
from tests.unit.aggregator.reference import reference, reference_unique

SINCE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
UNIQUE = {("acme", "seats"): "user"}


async def fold_some_unlogged(
    client: Client, api_key: str, redis: Redis, settings: Settings, boundary: int
) -> list[UsageEvent]:
    """Usage of cus_a and cus_b around `boundary`: a first half aggregated with the raw log off,
    a second half (some hours only) with it on, so some buckets hold both kinds."""
    await post_events(client, api_key, events_around(boundary, "off"))
    accepted = await stream_events(redis, settings)
    async with Worker(
        settings.replace(raw_log=False), redis, attributor=wiring.attributor()
    ) as worker:
        await worker.drain()
    logged = [e for e in events_around(boundary, "on") if str(e["id"]).split("-")[1] in "0246"]
    await post_events(client, api_key, logged)
    accepted += await stream_events(redis, settings)
    async with Worker(settings, redis, attributor=wiring.attributor()) as worker:
        await worker.drain()
    return accepted


async def test_unlogged_usage_moves_whole_or_stays_never_lost(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO meter_definitions (tenant, meter, aggregation, unique_property)"
        " VALUES ('acme', 'seats', 'unique_count', 'user')"
    )
    # A billing period ends half way through an hour ten hours ago.
    boundary = (now_ms() - 10 * HOUR_MS) // HOUR_MS * HOUR_MS + 30 * 60_000
    accepted = await fold_some_unlogged(client, api_key, redis, settings, boundary)
    assert await rollups(db) == reference(accepted)
    before = await db.fetchval("SELECT sum(event_count) FROM usage_rollups")

    periods = periods_around(boundary)
    index = index_periods(periods)
    split = hour_of(boundary)

    def expected(e: UsageEvent) -> Attribution:
        # calls: every hour but the one the boundary cuts moves whole into its period; seats
        # (unique_count): its hours would land in two periods and one stays, so none moves.
        if e.customer != "cus_a" or e.meter != "calls" or split.contains(e.timestamp_ms):
            return UNATTRIBUTED
        return attribute(e.customer, e.meter, e.timestamp_ms, index)

    done = Reattributed()
    moved = await reattribute(db, PeriodsAttributor(periods), "acme", "cus_a", SINCE, done)
    assert moved == len([e for e in accepted if expected(e) is not UNATTRIBUTED])
    assert (done.whole_buckets, done.stuck) == (3, 1 + 4)
    assert await rollups(db) == reference(accepted, expected)
    assert await unique_totals(db) == reference_unique(accepted, UNIQUE, expected)
    assert await db.fetchval("SELECT sum(event_count) FROM usage_rollups") == before
    # The raw events of the moved buckets carry their attribution now.
    marked = await db.fetch(
        "SELECT event_id, subscription_item FROM usage_events WHERE subscription_item IS NOT NULL"
    )
    by_id = {e.id: e for e in accepted}
    assert marked
    assert all(r["subscription_item"] == expected(by_id[r["event_id"]]).item for r in marked)

    # Again, or by the sweep: nothing moves, nothing is lost; the stuck buckets are counted.
    again = Reattributed()
    assert await reattribute(db, PeriodsAttributor(periods), "acme", "cus_a", SINCE, again) == 0
    assert await sweep(db, PeriodsAttributor(periods), SINCE, again) == 0
    assert again.stuck == 2 * 5 + 4 + 4  # cus_a twice; cus_b's calls and seats hours
    assert await rollups(db) == reference(accepted, expected)

    # The way out: the operator moves the stuck calls hour whole into the period billing an
    # instant of it (here the new one, from the boundary on); for seats, the hour holding the
    # named instant goes to its period, every other hour whole into the period covering it.
    seats_before = await db.fetchval(
        "SELECT sum(unique_count) FROM usage_rollups WHERE customer = 'cus_a' AND meter = 'seats'"
    )
    new = attribute("cus_a", "calls", boundary, index)
    old = attribute("cus_a", "seats", boundary - 1, index)

    def forced(e: UsageEvent) -> Attribution:
        if e.customer != "cus_a":
            return UNATTRIBUTED
        if split.contains(e.timestamp_ms):
            return new if e.meter == "calls" else old
        return attribute(e.customer, e.meter, e.timestamp_ms, index)

    attributor = PeriodsAttributor(periods)
    await reattribute(db, attributor, "acme", "cus_a", SINCE, force=("calls", boundary + 60_000))
    await reattribute(db, attributor, "acme", "cus_a", SINCE, force=("seats", boundary - 1))
    assert await rollups(db) == reference(accepted, forced)
    assert await db.fetchval("SELECT sum(event_count) FROM usage_rollups") == before
    # Each distinct value still counts once (in the period of the hour that first brought it).
    assert (
        await db.fetchval(
            "SELECT sum(unique_count) FROM usage_rollups"
            " WHERE customer = 'cus_a' AND meter = 'seats'"
        )
        == seats_before
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM usage_rollups WHERE customer = 'cus_a'"
            " AND subscription_item IS NULL"
        )
        == 0
    )
    with pytest.raises(NoItemPeriod):
        await reattribute(db, attributor, "acme", "cus_b", SINCE, force=("calls", boundary))


async def test_unlogged_usage_of_every_aggregation_moves_whole_into_one_period(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO meter_definitions (tenant, meter, aggregation, unique_property)"
        " VALUES ('acme', 'seats', 'unique_count', 'user')"
    )
    boundary = (now_ms() - 10 * HOUR_MS) // HOUR_MS * HOUR_MS + 30 * 60_000
    accepted = await fold_some_unlogged(client, api_key, redis, settings, boundary)
    # One period covers every hour of the usage; an attributed event of the same period
    # already brought a seat value that the moved set holds too.
    month = Window(boundary - 15 * 24 * HOUR_MS, boundary + 15 * 24 * HOUR_MS)
    periods = [ItemPeriod("cus_a", m, f"si_{m}", month) for m in ("calls", "seats")]
    attributor = PeriodsAttributor(periods)
    early = {
        "id": "attributed-0",
        "customer": "cus_a",
        "meter": "seats",
        "value": 1,
        "timestamp": (boundary + 2 * HOUR_MS) / 1000,
        "properties": {"user": "u0"},
    }
    await post_events(client, api_key, [early])
    accepted += await stream_events(redis, settings)
    async with Worker(settings, redis, attributor=attributor) as worker:
        await worker.drain()
    index = index_periods(periods)

    def attributed(e: UsageEvent) -> Attribution:
        return attribute(e.customer, e.meter, e.timestamp_ms, index)

    moved = await reattribute(db, attributor, "acme", "cus_a", SINCE)
    assert moved == len([e for e in accepted if e.customer == "cus_a"]) - 1
    assert await rollups(db) == reference(accepted, attributed)
    assert await unique_totals(db) == reference_unique(accepted, UNIQUE, attributed)
    assert await unique_totals(db) == {
        ("acme", "cus_a", "seats", "si_seats", month.start_ms): 3,
        ("acme", "cus_b", "seats", None, None): 3,
    }
