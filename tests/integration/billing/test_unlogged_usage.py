"""Usage aggregated with the raw log off (METER_RAW_LOG=0) for a customer Stripe does not know yet
is attributed once the customer and its subscription arrive by webhook, and reaches Stripe in
full."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import aiohttp
import orjson
from redis.asyncio import Redis

from aggregator.cli import reattribute_once
from aggregator.worker import Worker
from meter import wiring
from meter.cli import build_parser
from reporter.worker import Reporter

from .conftest import Stack, catalog, clock_customer, hour_now


async def reported(stack: Stack, meter: str, customer: str) -> Decimal:
    """Run the reporter once; the customer's total in the emulator's meter."""
    rsettings = stack.settings.replace(
        reporter_timeout_s=2.0,
        reporter_backoff_base_s=0.01,
        reporter_backoff_cap_s=0.05,
        reporter_poll_interval_s=0.02,
    )
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        assert await reporter.once() > 0
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.running.api_base}/_emulator/meters/{meter}/totals") as r,
    ):
        totals = (await r.json())["totals"]
    return Decimal(str(totals[customer]))


async def test_unlogged_usage_of_an_unknown_customer_reaches_stripe(
    stack: Stack, redis: Redis
) -> None:
    cat = await catalog(stack.sdk)
    start = hour_now() - 3 * 3600
    values = [40, 60, 50, 7, 0.5, 12]
    events = [
        {
            "id": f"u{i}",
            "customer": "unlogged-1",
            "meter": "calls",
            "value": v,
            "timestamp": start + 600 + i * 1500,
        }
        for i, v in enumerate(values)
    ]
    response = await stack.client.post("/v1/events", data=orjson.dumps(events), headers=stack.auth)
    assert response.status == 200, await response.text()
    async with Worker(
        stack.settings.replace(raw_log=False), redis, attributor=wiring.attributor()
    ) as worker:
        assert await worker.drain() == len(values)
    # The raw log back on: one more event, in an hour that already holds unlogged ones.
    late = {"id": "u-on", "customer": "unlogged-1", "meter": "calls", "value": 3}
    response = await stack.client.post(
        "/v1/events", data=orjson.dumps([{**late, "timestamp": start + 900}]), headers=stack.auth
    )
    assert response.status == 200, await response.text()
    async with Worker(stack.settings, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == 1

    # The customer and its subscription appear (webhooks); billing re-attributes at once.
    clock, cus = await clock_customer(stack.sdk, "unlogged-1", start)
    await stack.sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["metered"]}]}
    )
    # The test clock catches up with the usage (Stripe takes no meter event from its future).
    await stack.sdk.v1.test_helpers.test_clocks.advance_async(
        clock, {"frozen_time": int(time.time())}
    )
    await stack.settle()
    async with stack.billing.connection() as conn:
        unattributed = await conn.fetchval(
            "SELECT count(*) FROM usage_rollups WHERE subscription_item IS NULL"
        )
        attributed = await conn.fetchval(
            "SELECT sum(value_sum) FROM usage_rollups WHERE subscription_item IS NOT NULL"
        )
    assert (unattributed, attributed) == (0, Decimal("172.5"))

    assert await reported(stack, cat["meter"], cus) == Decimal("172.5")
    # And Stripe bills it: 172.5 units at 2 cents.
    preview = await stack.sdk.v1.invoices.create_preview_async({"customer": cus})
    assert [line.amount for line in preview.lines.data] == [345]


async def test_stuck_unlogged_usage_moves_whole_by_the_operator(stack: Stack, redis: Redis) -> None:
    cat = await catalog(stack.sdk)
    # The subscription starts half way through an hour that already holds unlogged usage.
    start = hour_now() - 3 * 3600 + 1800
    events = [
        {"id": f"s{i}", "customer": "stuck-1", "meter": "calls", "value": v, "timestamp": at}
        for i, (v, at) in enumerate([(5, start - 600), (7, start + 600), (11, start + 4000)])
    ]
    response = await stack.client.post("/v1/events", data=orjson.dumps(events), headers=stack.auth)
    assert response.status == 200, await response.text()
    async with Worker(
        stack.settings.replace(raw_log=False), redis, attributor=wiring.attributor()
    ) as worker:
        assert await worker.drain() == 3
    clock, cus = await clock_customer(stack.sdk, "stuck-1", start)
    await stack.sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["metered"]}]}
    )
    await stack.sdk.v1.test_helpers.test_clocks.advance_async(
        clock, {"frozen_time": int(time.time())}
    )
    await stack.settle()

    async def unattributed() -> Decimal | None:
        async with stack.billing.connection() as conn:
            total: Decimal | None = await conn.fetchval(
                "SELECT sum(value_sum) FROM usage_rollups WHERE subscription_item IS NULL"
            )
            return total

    # The later hour moved whole; the cut one cannot be split, so it stays, unreported.
    assert await unattributed() == 12
    args = build_parser().parse_args(["reattribute", "--customer", "stuck-1"])
    assert await reattribute_once(stack.settings, args) == 0
    assert await unattributed() == 12
    # The documented way out: move it whole into the period billing an instant of it.
    at = dt.datetime.fromtimestamp(start + 60, dt.UTC).isoformat()
    args = build_parser().parse_args(
        ["reattribute", "--customer", "stuck-1", "--force-whole", "calls", "--at", at]
    )
    assert await reattribute_once(stack.settings, args) == 0
    assert await unattributed() is None
    assert await reported(stack, cat["meter"], cus) == 5 + 7 + 11
