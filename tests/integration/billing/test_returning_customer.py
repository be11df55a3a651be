"""A customer whose Stripe customer was deleted comes back: a new Stripe customer takes over our
id, checkout works, and usage under our id is billed on the new subscription. Deleting a Stripe
customer "also immediately cancels any active subscriptions on the customer"
(https://docs.stripe.com/api/customers/delete)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter import wiring

from .conftest import Stack, catalog


async def _subscribe(stack: Stack, key: str, price: str) -> dict[str, Any]:
    body = {"prices": [price], "success_url": "https://a/ok"}
    status, doc = await stack.post(f"/v1/customers/{key}/checkout-session", body)
    assert status == 200, doc
    await stack.complete_checkout(doc["id"])
    await stack.settle()
    status, view = await stack.get(f"/v1/customers/{key}/subscription")
    assert status == 200, view
    return dict(view)


async def test_deleted_customer_comes_back_and_is_billed(stack: Stack, redis: Redis) -> None:
    cat = await catalog(stack.sdk)
    first = await _subscribe(stack, "back-1", cat["metered"])
    old_cus, old_sub = first["stripe_customer"], first["subscription"]["id"]

    await stack.sdk.v1.customers.delete_async(old_cus)
    await stack.settle()
    # Stripe cancels the deleted customer's subscriptions; meter stores that.
    assert (await stack.sdk.v1.subscriptions.retrieve_async(old_sub)).status == "canceled"
    async with stack.billing.connection() as conn:
        status = await conn.fetchval("SELECT status FROM subscriptions WHERE id = $1", old_sub)
    assert status == "canceled"

    # Usage of the coming period, aggregated before billing knows the new subscription: it has
    # no item yet.
    event = {
        "id": "back-1-e1",
        "customer": "back-1",
        "meter": "calls",
        "value": 7,
        "timestamp": int(time.time()) + 120,
    }
    response = await stack.client.post("/v1/events", data=orjson.dumps([event]), headers=stack.auth)
    assert response.status == 200, await response.text()
    async with Worker(stack.settings, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == 1

    second = await _subscribe(stack, "back-1", cat["metered"])
    new_cus = second["stripe_customer"]
    assert new_cus != old_cus
    assert second["subscription"]["status"] == "active"
    [item] = [i["id"] for i in second["subscription"]["items"]]
    async with stack.billing.connection() as conn:
        rows = await conn.fetch(
            "SELECT subscription_item, value_sum FROM usage_rollups WHERE customer = 'back-1'"
        )
        linked = await conn.fetch(
            "SELECT stripe_id, deleted FROM customers WHERE external_id = 'back-1' ORDER BY deleted"
        )
    assert [(r["stripe_id"], r["deleted"]) for r in linked] == [(new_cus, False), (old_cus, True)]
    # Re-attributed to the new subscription's item.
    assert [(r["subscription_item"], int(r["value_sum"])) for r in rows] == [(item, 7)]
