"""Billing data feeding the aggregator: events posted through the ingest API land in buckets of
their subscription item, split at the billing period boundary, whether the subscription was
known before the events were aggregated or arrived after."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import orjson
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter import wiring

from .conftest import Stack, catalog, clock_customer, hour_now

MIN = 60


async def post(stack: Stack, events: list[dict[str, object]]) -> None:
    response = await stack.client.post("/v1/events", data=orjson.dumps(events), headers=stack.auth)
    doc = await response.json()
    assert (response.status, doc["accepted"]) == (200, len(events)), doc


def events(boundary: int, tag: str, customers: tuple[str, str]) -> list[dict[str, object]]:
    offsets = (-90, -40, -1, 0, 1, 20)
    return [
        {
            "id": f"{tag}-{i}-{c}",
            "customer": c,
            "meter": "calls",
            "value": i + 1,
            "timestamp": boundary + offset * MIN,
        }
        for i, offset in enumerate(offsets)
        for c in customers
    ]


async def test_buckets_carry_item_and_split_at_period_boundary(stack: Stack, redis: Redis) -> None:
    cat = await catalog(stack.sdk, interval="day")
    # A daily plan whose period rolled over 1.5 h ago, inside the ingest late window.
    boundary = hour_now() - 2 * 3600 + 30 * MIN
    start = boundary - 86400
    clock, cus = await clock_customer(stack.sdk, "attr-1", start)
    await stack.settle()
    keys = ("attr-1", cus)  # events name the customer by our id or by Stripe's
    # Usage that arrives before the subscription is known: aggregated unattributed.
    await post(stack, events(boundary, "early", keys))
    async with Worker(stack.settings, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == 12
    async with stack.billing.connection() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM usage_rollups WHERE subscription_item IS NOT NULL"
            )
            == 0
        )
    sub = await stack.sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["metered"]}]}
    )
    item = sub["items"].data[0].id
    await stack.sdk.v1.test_helpers.test_clocks.advance_async(
        clock, {"frozen_time": boundary + 10 * MIN}
    )
    await stack.settle()
    # Usage aggregated after: attributed on the way in.
    await post(stack, events(boundary, "late", keys))
    async with Worker(stack.settings, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == 12
    async with stack.billing.connection() as conn:
        rows = await conn.fetch(
            "SELECT customer, subscription_item, period_start, bucket_start, bucket_end,"
            " value_sum FROM usage_rollups ORDER BY customer, bucket_start"
        )
    assert {r["subscription_item"] for r in rows} == {item}
    at = dt.datetime.fromtimestamp
    b = at(boundary, dt.UTC)
    for key in keys:
        mine = [r for r in rows if r["customer"] == key]
        # The hour holding the boundary is two buckets, one in each period.
        assert any(r["bucket_end"] == b for r in mine)
        assert any(r["bucket_start"] == b for r in mine)
        before = sum(r["value_sum"] for r in mine if r["bucket_end"] <= b)
        after = sum(r["value_sum"] for r in mine if r["bucket_start"] >= b)
        # Values 1..6 at offsets -90, -40, -1 | 0, 1, 20 minutes, posted twice.
        assert (before, after) == (Decimal(2 * (1 + 2 + 3)), Decimal(2 * (4 + 5 + 6)))
        periods = {r["period_start"] for r in mine}
        assert periods == {at(start, dt.UTC), b}
