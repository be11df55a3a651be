"""A customer with two live subscriptions on the same metered price is billed by Stripe on both
for each meter event; `/usage` shows every live subscription, each priced as its own invoice, and
each equals the emulator's preview of that subscription's invoice."""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter import wiring
from tests.integration.billing.conftest import Stack, catalog, clock_customer, hour_now


async def test_usage_shows_every_live_subscription(stack: Stack, redis: Redis) -> None:
    sdk = stack.sdk
    cat = await catalog(sdk)
    start = hour_now() - 3 * 3600
    _, cus = await clock_customer(sdk, "two-subs", start)
    first = await sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["metered"]}]}
    )
    second = await sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["metered"]}, {"price": cat["basic"]}]}
    )
    await stack.settle()

    events = [
        {"id": f"e{i}", "customer": "two-subs", "meter": "calls", "value": v, "timestamp": start}
        for i, v in enumerate([3, 4])
    ]
    response = await stack.client.post("/v1/events", data=orjson.dumps(events), headers=stack.auth)
    assert response.status == 200, await response.text()
    async with Worker(stack.settings, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == 2
    await sdk.v1.billing.meter_events.create_async(
        {
            "event_name": "calls",
            "timestamp": start,
            "identifier": "two-subs-usage",
            "payload": {"stripe_customer_id": cus, "value": "7"},
        }
    )

    status, doc = await stack.get("/v1/customers/two-subs/usage")
    assert status == 200, doc
    subs: dict[str, Any] = {doc["subscription"]: doc}
    subs |= {o["subscription"]: o for o in doc["other_subscriptions"]}
    assert set(subs) == {first.id, second.id}
    for sub_id, part in subs.items():
        metered = [i for i in part["items"] if i["usage_type"] == "metered"]
        assert [m["quantity"] for m in metered] == ["7"], part
        preview = await sdk.v1.invoices.create_preview_async(
            {"customer": cus, "subscription": sub_id}
        )
        assert part["invoice"]["total"] == preview.total, (sub_id, part["invoice"])
