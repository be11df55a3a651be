"""A billing period cut short (an anchor reset) after usage past the cut was folded into it:
aggregator/cuts.py moves the buckets at or after the cut, with their raw events and distinct
values, to the new period; the hour holding the cut stays in the old one. Checked against the
reference fold (tests/unit/aggregator/reference.py) under that attribution, and the totals
against the buckets."""

from __future__ import annotations

import datetime as dt

import asyncpg
from redis.asyncio import Redis

from aggregator.attribution import Attribution, ItemPeriod, attribute, index_periods
from aggregator.cuts import move_after_cut
from aggregator.windows import Window
from aggregator.worker import Worker
from meter.config import Settings
from meter.events import UsageEvent
from tests.conftest import TOTALS_DRIFT
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

UNIQUE = {("acme", "seats"): "user"}
MIN_MS = 60_000


def _events(cut: int, tag: str, offsets: list[int], user: str) -> list[dict[str, object]]:
    return [
        {
            "id": f"{tag}-{i}-{meter}",
            "customer": "cus_a",
            "meter": meter,
            "value": i + 1,
            "timestamp": (cut + offset * MIN_MS) / 1000,
            "properties": {"user": f"{user}{i}"},
        }
        for i, offset in enumerate(offsets)
        for meter in ("calls", "seats")
    ]


async def test_usage_past_a_cut_moves_to_the_new_period(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO meter_definitions (tenant, meter, aggregation, unique_property)"
        " VALUES ('acme', 'seats', 'unique_count', 'user')"
    )
    cut = (now_ms() - 5 * HOUR_MS) // HOUR_MS * HOUR_MS + 25 * MIN_MS  # inside an hour
    start, end = cut - 10 * 24 * HOUR_MS, cut + 20 * 24 * HOUR_MS
    old = [ItemPeriod("cus_a", m, f"si_{m}", Window(start, end)) for m in ("calls", "seats")]
    # 1. Folded while only the old period is known: before the cut, in the hour holding it,
    #    and in later hours.
    await post_events(client, api_key, _events(cut, "pre", [-70, -5, 10, 40, 100, 130], "p"))
    pre = await stream_events(redis, settings)
    async with Worker(settings, redis, attributor=PeriodsAttributor(old)) as worker:
        await worker.drain()
    # 2. The reset: the old period ends at the cut, a new one starts there; usage moves.
    cut_at = dt.datetime.fromtimestamp(cut / 1000, dt.UTC)
    async with db.transaction():
        for meter in ("calls", "seats"):
            assert await move_after_cut(db, "acme", ["cus_a"], f"si_{meter}", cut_at) == 1
    new = [
        ItemPeriod(p.customer, p.meter, p.item, w)
        for p in old
        for w in (Window(start, cut), Window(cut, cut + 30 * 24 * HOUR_MS))
    ]
    # 3. Folded with the new period known, into the same hours.
    await post_events(client, api_key, _events(cut, "post", [15, 45, 110], "q"))
    post = await stream_events(redis, settings)
    async with Worker(settings, redis, attributor=PeriodsAttributor(new)) as worker:
        await worker.drain()

    cut_index, old_index = index_periods(new), index_periods(old)
    pre_ids = {e.id for e in pre}

    def attributed(e: UsageEvent) -> Attribution:
        if e.id not in pre_ids:
            return attribute(e.customer, e.meter, e.timestamp_ms, cut_index)
        # Folded before the cut: its hour bucket moved iff the hour starts at or after the cut.
        if e.timestamp_ms // HOUR_MS * HOUR_MS >= cut:
            return attribute(e.customer, e.meter, e.timestamp_ms, cut_index)
        return attribute(e.customer, e.meter, e.timestamp_ms, old_index)

    everything = pre + post
    assert await rollups(db) == reference(everything, attributed)
    assert await unique_totals(db) == reference_unique(everything, UNIQUE, attributed)
    assert await db.fetch(TOTALS_DRIFT) == []
    # The raw log names the period each event's bucket is in now (what a void matches on).
    raw = {
        r["event_id"]: r["period_start"]
        for r in await db.fetch("SELECT event_id, period_start FROM usage_events")
    }
    for e in everything:
        a = attributed(e)
        assert a.period is not None
        assert raw[e.id] == dt.datetime.fromtimestamp(a.period.start_ms / 1000, dt.UTC), e.id
