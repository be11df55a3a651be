"""Usage that reaches the reporter after its period's invoice was finalized, end to end against
the emulator (a subscription on a test clock, synced by webhooks): Stripe bills it in the next
invoice, and the usage API projects it there, not in the period it came from."""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter import wiring
from reporter.worker import Reporter
from tests.integration.billing.conftest import Stack, catalog, clock_customer, hour_now

from .test_emulator_preview import assert_invoice_equals


async def _post_and_aggregate(stack: Stack, redis: Redis, event: dict[str, Any]) -> None:
    response = await stack.client.post("/v1/events", data=orjson.dumps([event]), headers=stack.auth)
    assert response.status == 200, await response.text()
    async with Worker(stack.settings, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == 1


async def test_late_usage_is_billed_and_projected_in_the_next_invoice(
    stack: Stack, redis: Redis
) -> None:
    sdk = stack.sdk
    cat = await catalog(sdk)  # metered: 2 cents a call
    start = hour_now() - 3 * 3600
    clock, cus = await clock_customer(sdk, "late-1", start)
    sub = await sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["metered"]}]}
    )
    end = sub["items"].data[0].current_period_end
    await stack.settle()
    reporter_settings = stack.settings.replace(
        reporter_poll_interval_s=0.02, reporter_backoff_base_s=0.01, reporter_backoff_cap_s=0.05
    )

    def call(id_: str, value: int, at: int) -> dict[str, Any]:
        return {"id": id_, "customer": "late-1", "meter": "calls", "value": value, "timestamp": at}

    await _post_and_aggregate(stack, redis, call("a", 5, start + 1800))
    async with Reporter(reporter_settings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
    # The period ends and its invoice is finalized (and paid) an hour later; billing stores it.
    await sdk.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": end + 2 * 3600})
    await stack.settle()
    # Usage of the ended period arrives now, and the customer has none in the new period yet.
    await _post_and_aggregate(stack, redis, call("b", 7, start + 3600))
    async with Reporter(reporter_settings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
        assert reporter.metrics.late.labels("carried")._value.get() == 1

    # Stripe: the finalized invoice billed the 5 it had; the 7 are in the next one.
    invoices = (await sdk.v1.invoices.list_async({"customer": cus})).data
    cycle = next(i for i in invoices if i.billing_reason == "subscription_cycle")
    assert cycle.status == "paid"
    assert [line.quantity for line in cycle.lines.data] == [5]
    preview = await sdk.v1.invoices.create_preview_async({"customer": cus})
    assert [line.quantity for line in preview.lines.data] == [7]

    # Our projection of the current invoice is the preview; the previous period shows what its
    # invoice billed.
    status, doc = await stack.get(f"/v1/customers/{cus}/usage")
    assert status == 200, doc
    assert_invoice_equals(doc, preview)
    assert [i["quantity"] for i in doc["items"] if i["usage_type"] == "metered"] == ["7"]
    status, previous = await stack.get(f"/v1/customers/{cus}/usage?period=previous")
    assert status == 200, previous
    assert [i["quantity"] for i in previous["items"] if i["usage_type"] == "metered"] == ["5"]
    assert previous["invoice"]["subtotal"] == cycle.subtotal
