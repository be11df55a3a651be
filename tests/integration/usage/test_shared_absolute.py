"""Two subscription items of one customer on one absolute meter (`unique_count`, `max`), the
customer's events split between them, end to end against the Stripe emulator: ingest, aggregator,
reporter, webhooks.

A Stripe meter event names a customer and an event name, never an item
(docs.stripe.com/api/billing/meter-event/create), so every item with a price on the meter bills
the customer's one `last` value. The oracle is the test's own model of the customer's usage: the
distinct users (or the greatest value) of all its events in the period, whatever item the
aggregator gave each event to. The emulator's stored meter total, each subscription's invoice
preview and the usage API's projection of each line all equal it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
import stripe
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter import wiring
from reporter.worker import Reporter
from tests.integration.billing.conftest import Stack, clock_customer, hour_now
from tests.integration.reporter.conftest import control

from .test_emulator_preview import assert_invoice_equals

# (user, value) of the events before and after the second subscription exists.
FIRST = [("u1", 10), ("u2", 4)]
SECOND = [("u2", 7), ("u3", 6)]
EXPECTED = {"unique_count": Decimal(3), "max": Decimal(10)}


async def _post_and_fold(stack: Stack, redis: Redis, events: list[dict[str, Any]]) -> None:
    response = await stack.client.post("/v1/events", data=orjson.dumps(events), headers=stack.auth)
    assert response.status == 200, await response.text()
    async with Worker(stack.settings, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == len(events)


async def _report(stack: Stack) -> None:
    async with Reporter(stack.settings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
        assert await reporter.once() == 0


async def _item_of(sdk: stripe.StripeClient, subscription: str) -> str:
    sub = await sdk.v1.subscriptions.retrieve_async(subscription)
    return str(sub["items"]["data"][0]["id"])


async def split_between_two_subscriptions(
    stack: Stack, redis: Redis, aggregation: str, name: str
) -> tuple[str, str, str, list[str]]:
    """A `last` Stripe meter priced at 1.00 a unit, our `aggregation` on it; a customer's
    events split between two subscriptions with the same window. Returns the Stripe meter, our
    customer id (`name` and a suffix), the Stripe customer and the subscriptions."""
    sdk = stack.sdk
    meter = await sdk.v1.billing.meters.create_async(
        {"display_name": "Seats", "event_name": "seats", "default_aggregation": {"formula": "last"}}
    )
    async with stack.billing.connection() as conn:
        await conn.execute(
            "INSERT INTO meter_definitions (tenant, meter, aggregation, unique_property)"
            " VALUES ('acme', 'seats', $1, $2)",
            aggregation,
            "user" if aggregation == "unique_count" else None,
        )
    product = await sdk.v1.products.create_async({"name": "Seats"})
    price = await sdk.v1.prices.create_async(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 100,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    start = hour_now() - 3 * 3600
    # The aggregator gives a tie of windows to the least item id, and ids are random: a first
    # item in the upper half of the alphabet leaves a later item an even chance to sort before
    # it. Customers whose item sorts low are left without usage.
    for attempt in range(30):
        customer = f"{name}-{attempt}"
        _, cus = await clock_customer(sdk, customer, start)
        first = await sdk.v1.subscriptions.create_async(
            {"customer": cus, "items": [{"price": price.id}]}
        )
        mine = await _item_of(sdk, first.id)
        if mine.removeprefix("si_") >= "V":
            break
    else:
        pytest.fail("no first subscription item sorted in the upper half")
    await stack.settle()

    def events(rows: list[tuple[str, int]], offset: int) -> list[dict[str, Any]]:
        return [
            {
                "id": f"{customer}-{offset + i}",
                "customer": customer,
                "meter": "seats",
                "value": v,
                "timestamp": start + 60 + offset + i,
                "properties": {"user": u},
            }
            for i, (u, v) in enumerate(rows)
        ]

    # The only item then: every event of the first batch is its.
    await _post_and_fold(stack, redis, events(FIRST, 0))
    await _report(stack)
    # Same clock, so the same window: a subscription whose item sorts first takes the later
    # events (try again until one does).
    subscriptions = [first.id]
    for _ in range(30):
        other = await sdk.v1.subscriptions.create_async(
            {"customer": cus, "items": [{"price": price.id}]}
        )
        subscriptions.append(other.id)
        if await _item_of(sdk, other.id) < mine:
            break
    else:
        pytest.fail("no subscription item sorted before the first one")
    await stack.settle()
    await _post_and_fold(stack, redis, events(SECOND, 100))
    async with stack.billing.connection() as conn:
        items = await conn.fetchval(
            "SELECT count(DISTINCT subscription_item) FROM usage_rollups WHERE meter = 'seats'"
        )
    assert items == 2, "the events are split between the two items"
    await _report(stack)
    return meter.id, customer, cus, subscriptions


@pytest.mark.parametrize("aggregation", ["unique_count", "max"])
async def test_lines_on_one_absolute_meter_bill_the_customers_union(
    stack: Stack, redis: Redis, aggregation: str
) -> None:
    meter_id, customer, cus, subscriptions = await split_between_two_subscriptions(
        stack, redis, aggregation, f"shared-{aggregation.replace('_', '-')}"
    )
    expected = EXPECTED[aggregation]
    doc = await control(stack.running, "GET", f"/meters/{meter_id}/totals")
    assert Decimal(str(doc["totals"].get(cus, 0))) == expected

    status, usage = await stack.get(f"/v1/customers/{customer}/usage")
    assert status == 200, usage
    parts = {usage["subscription"]: usage} | {
        o["subscription"]: o for o in usage["other_subscriptions"]
    }
    assert set(parts) == set(subscriptions)
    for sub_id, part in parts.items():
        assert [i["quantity"] for i in part["items"]] == [str(expected)], part
        preview = await stack.sdk.v1.invoices.create_preview_async(
            {"customer": cus, "subscription": sub_id}
        )
        assert preview.total == int(expected) * 100, (sub_id, preview.total)
        assert_invoice_equals(part, preview)
