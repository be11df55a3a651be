"""A billing-cycle anchor reset cuts the item's period at the reset: periods of an item never
overlap, usage folded into the old period past the cut (aggregated before the reset's webhook)
moves with its whole buckets to the new period, and a void subtracts from exactly the bucket its
event was folded into. Checked against the emulator: what Stripe holds for the meter, and the
running totals against the buckets."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter import wiring
from reporter.voids import void_event
from reporter.worker import Reporter
from tests.conftest import TOTALS_DRIFT

from .conftest import TENANT, Stack, catalog, clock_customer, hour_now

MIN = 60


def _event(eid: str, value: int, at: int) -> dict[str, Any]:
    return {"id": eid, "customer": "anchor-1", "meter": "calls", "value": value, "timestamp": at}


async def _ingest(stack: Stack, redis: Redis, events: list[dict[str, Any]]) -> None:
    response = await stack.client.post("/v1/events", data=orjson.dumps(events), headers=stack.auth)
    assert response.status == 200, await response.text()
    async with Worker(stack.settings, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == len(events)


async def _stripe_total(stack: Stack, meter: str, customer: str) -> Decimal:
    url = f"{stack.running.api_base}/_emulator/meters/{meter}/totals"
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        doc = await r.json()
    return Decimal(str(doc["totals"].get(customer, 0)))


def _at(unix: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix, dt.UTC)


async def test_anchor_reset_cuts_the_period_and_a_void_subtracts_once(
    stack: Stack, redis: Redis
) -> None:
    cat = await catalog(stack.sdk)
    start = hour_now() - 4 * 3600
    clock, cus = await clock_customer(stack.sdk, "anchor-1", start)
    sub = await stack.sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["metered"]}]}
    )
    item = sub["items"].data[0].id
    await stack.settle()
    reset = start + 2 * 3600 + 30 * MIN  # inside an hour: that hour is cut in two buckets
    # Usage after the reset, aggregated before anyone knows of the reset: into the old period.
    await _ingest(
        stack,
        redis,
        [
            _event("a1", 5, reset + 10 * MIN),
            _event("a2", 3, reset + 10 * MIN),
            _event("b1", 4, reset + 70 * MIN),  # the next hour
        ],
    )
    reporter_settings = stack.settings.replace(
        reporter_timeout_s=0.5,
        reporter_backoff_base_s=0.01,
        reporter_backoff_cap_s=0.05,
        reporter_poll_interval_s=0.02,
        reporter_invoice_grace_s=60.0,
    )
    await stack.sdk.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": reset})
    await stack.sdk.v1.subscriptions.update_async(
        sub.id,
        {"billing_cycle_anchor": {"type": "now"}, "proration_behavior": "none"},  # type: ignore[typeddict-item]
    )
    # The customer's clock at the present, so that Stripe takes usage of every hour above.
    await stack.sdk.v1.test_helpers.test_clocks.advance_async(
        clock, {"frozen_time": int(time.time())}
    )
    await stack.settle()
    async with Reporter(reporter_settings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
        # Usage of the same hours, aggregated with the new period known.
        await _ingest(
            stack, redis, [_event("c1", 2, reset + 20 * MIN), _event("d1", 6, reset + 80 * MIN)]
        )
        async with stack.billing.connection() as conn:
            assert (await void_event(conn, TENANT, "a1", wiring.subtract_event())).value == 5
        await reporter.once()

        # Stripe holds every event once but the voided one: 3 + 4 + 2 + 6.
        assert await _stripe_total(stack, cat["meter"], cus) == 15

    async with stack.billing.connection() as conn:
        periods = await conn.fetch(
            "SELECT period_start, period_end FROM subscription_item_periods WHERE item = $1"
            " ORDER BY period_start",
            item,
        )
        assert next((r["period_start"], r["period_end"]) for r in periods) == (
            _at(start),
            _at(reset),
        )
        assert periods[1]["period_start"] == _at(reset)
        totals = {
            r["period_start"]: r["value_sum"]
            for r in await conn.fetch(
                "SELECT period_start, value_sum FROM usage_totals WHERE subscription_item = $1",
                item,
            )
        }
        # The hour holding the reset stays with the old period (a2; a1 voided); later hours and
        # everything aggregated after the reset are the new period's.
        assert totals == {_at(start): 3, _at(reset): 12}
        assert await conn.fetch(TOTALS_DRIFT) == []
