"""The reporter's unit of an absolute meter is the customer's period over every item billing it.

- Two items with the same window, the customer's events split between them: one mark (item '')
  and one stream of versions for the customer-meter-window, each the union of both items'
  buckets; the emulator's stored total is the test's own count of distinct users, and a second
  run sends nothing (exactly once).
- Windows on one Stripe meter that overlap with other bounds (a second subscription started an
  hour later) cannot both show their own usage from the one `last` value Stripe keeps per
  customer: each version sent then is counted in `meter_reporter_absolute_windows_overlapping`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter import wiring
from reporter.worker import Reporter
from tests.integration.billing.conftest import Stack, clock_customer, hour_now
from tests.integration.billing.conftest import stack as stack
from tests.integration.usage.test_shared_absolute import split_between_two_subscriptions

from .conftest import control


async def test_one_unit_per_customer_meter_and_window(stack: Stack, redis: Redis) -> None:
    meter_id, _, cus, _ = await split_between_two_subscriptions(
        stack, redis, "unique_count", "shared-unit"
    )
    async with stack.billing.connection() as conn:
        marks = await conn.fetch(
            "SELECT subscription_item, unit, dims, value FROM report_marks WHERE meter = 'seats'"
        )
        rows = await conn.fetch(
            "SELECT identifier, value, event_time, status FROM report_outbox"
            " WHERE meter = 'seats' ORDER BY event_time"
        )
    assert [(m["subscription_item"], m["unit"], m["dims"], m["value"]) for m in marks] == [
        ("", "period", "", Decimal(3))
    ]
    # The first item's 2 users, then the union of both items' 3: stamped in that order.
    assert [(r["value"], r["status"]) for r in rows] == [(Decimal(2), "sent"), (Decimal(3), "sent")]
    assert len({r["identifier"] for r in rows}) == 2
    doc = await control(stack.running, "GET", f"/meters/{meter_id}/totals")
    assert Decimal(str(doc["totals"][cus])) == 3
    async with Reporter(stack.settings, directory=wiring.customer_directory()) as reporter:
        assert await reporter.once() == 0
        assert reporter.metrics.overlapping._value.get() == 0


async def test_overlapping_windows_are_counted(stack: Stack, redis: Redis) -> None:
    sdk = stack.sdk
    meter = await sdk.v1.billing.meters.create_async(
        {"display_name": "Peak", "event_name": "peak", "default_aggregation": {"formula": "last"}}
    )
    async with stack.billing.connection() as conn:
        await conn.execute(
            "INSERT INTO meter_definitions (tenant, meter, aggregation)"
            " VALUES ('acme', 'peak', 'max')"
        )
    product = await sdk.v1.products.create_async({"name": "Peak"})
    price = await sdk.v1.prices.create_async(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 100,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    start = hour_now() - 4 * 3600
    clock, cus = await clock_customer(sdk, "overlap", start)
    await sdk.v1.subscriptions.create_async({"customer": cus, "items": [{"price": price.id}]})
    await sdk.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": start + 3600})
    await sdk.v1.subscriptions.create_async({"customer": cus, "items": [{"price": price.id}]})
    await stack.settle()

    events: list[dict[str, Any]] = [
        {"id": "o1", "customer": "overlap", "meter": "peak", "value": 9, "timestamp": start + 60},
        {"id": "o2", "customer": "overlap", "meter": "peak", "value": 4, "timestamp": start + 7200},
    ]
    response = await stack.client.post("/v1/events", data=orjson.dumps(events), headers=stack.auth)
    assert response.status == 200, await response.text()
    async with Worker(stack.settings, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == 2
    async with Reporter(stack.settings, directory=wiring.customer_directory()) as reporter:
        assert await reporter.once() == 2
        assert await reporter.once() == 0
        # Each window's version is sent (the first window's 9, the second's 4), and counted.
        assert reporter.metrics.overlapping._value.get() == 2
