"""Plan changes inside a billing period, end to end against the Stripe emulator: the usage API's
invoice equals the emulator's invoice preview (`invoices.create_preview` through the official
SDK), in both billing modes.

Stripe bills a metered price for the usage since it was set on its item; a price taken off an
item mid-period bills its usage so far at once as an invoice item in flexible mode, and not at
all in classic mode (docs.stripe.com/billing/subscriptions/usage-based/manage-billing-setup,
"Update prices mid-cycle"); a meter event is billed on every item with a price on its meter;
prorations wait for the next invoice as pending invoice items.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import asyncpg
import orjson
import pytest
import stripe
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter import wiring
from meter.billing.backfill import sync
from reporter.worker import Reporter
from tests.integration.billing.conftest import Stack, clock_customer, hour_now

HOUR = 3600


async def _meter(sdk: stripe.StripeClient, name: str) -> str:
    meter = await sdk.v1.billing.meters.create_async(
        {"display_name": name, "event_name": name, "default_aggregation": {"formula": "sum"}}
    )
    return meter.id


async def _metered(sdk: stripe.StripeClient, product: str, meter: str, cents: int) -> str:
    price = await sdk.v1.prices.create_async(
        {
            "product": product,
            "currency": "usd",
            "unit_amount": cents,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter},
        }
    )
    return price.id


async def _usage(
    stack: Stack, redis: Redis, cus: str, customer: str, meter: str, value: int, at: int, tag: str
) -> None:
    """`value` events of 1 at `at` through ingest and the aggregator, and the same usage reported
    to Stripe (the reporter's job in production)."""
    events = [
        {"id": f"{tag}-{i}", "customer": customer, "meter": meter, "value": 1, "timestamp": at}
        for i in range(value)
    ]
    response = await stack.client.post("/v1/events", data=orjson.dumps(events), headers=stack.auth)
    assert response.status == 200, await response.text()
    async with Worker(stack.settings, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == value
    await stack.sdk.v1.billing.meter_events.create_async(
        {
            "event_name": meter,
            "timestamp": at,
            "identifier": tag,
            "payload": {"stripe_customer_id": cus, "value": str(value)},
        }
    )


async def _projection_is_preview(stack: Stack, customer: str, cus: str, sub: str) -> Any:
    """Our invoice for the current period equals the emulator's preview, line amounts too."""
    if stack.emu.config.webhook_url is not None:
        await stack.settle()
    preview = await stack.sdk.v1.invoices.create_preview_async(
        {"customer": cus, "subscription": sub}
    )
    status, doc = await stack.get(f"/v1/customers/{customer}/usage")
    assert status == 200, doc
    invoice = doc["invoice"]
    assert invoice is not None, doc
    assert (invoice["subtotal"], invoice["total"]) == (preview.subtotal, preview.total), (
        invoice,
        [(ln.amount, ln.description) for ln in preview.lines.data],
    )
    assert sorted(ln["amount"] for ln in invoice["lines"]) == sorted(
        ln.amount for ln in preview.lines.data
    )
    return doc


async def _clocked(stack: Stack, customer: str) -> tuple[str, str, int]:
    start = hour_now() - 4 * HOUR
    clock, cus = await clock_customer(stack.sdk, customer, start)
    return clock, cus, start


async def _advance(stack: Stack, clock: str, to: int) -> None:
    await stack.sdk.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": to})


@pytest.mark.parametrize(("mode", "expected"), [("classic", 50), ("flexible", 250)])
async def test_a_price_change_bills_each_price_for_its_own_window(
    stack: Stack, redis: Redis, mode: str, expected: int
) -> None:
    sdk = stack.sdk
    calls = await _meter(sdk, "calls")
    product = (await sdk.v1.products.create_async({"name": "API"})).id
    a, b = await _metered(sdk, product, calls, 2), await _metered(sdk, product, calls, 5)
    clock, cus, start = await _clocked(stack, "repriced")
    sub = await sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": a}], "billing_mode": {"type": mode}}
    )
    await stack.settle()
    await _usage(stack, redis, cus, "repriced", "calls", 100, start + 60, "before")

    change = start + HOUR
    await _advance(stack, clock, change)
    item = sub["items"]["data"][0]["id"]
    await sdk.v1.subscriptions.update_async(sub.id, {"items": [{"id": item, "price": b}]})
    await stack.settle()
    await _usage(stack, redis, cus, "repriced", "calls", 10, change + 60, "after")

    doc = await _projection_is_preview(stack, "repriced", cus, sub.id)
    # classic: only the 10 calls after the change, at 5; flexible: the 100 before at 2 too.
    assert doc["invoice"]["total"] == expected
    assert doc["billing_mode"] == mode


@pytest.mark.parametrize(("mode", "expected"), [("classic", 50), ("flexible", 250)])
async def test_a_change_to_another_meter_keeps_the_old_meters_usage_and_late_events(
    stack: Stack, redis: Redis, db: asyncpg.Connection, mode: str, expected: int
) -> None:
    sdk = stack.sdk
    calls, jobs = await _meter(sdk, "calls"), await _meter(sdk, "jobs")
    product = (await sdk.v1.products.create_async({"name": "API"})).id
    a, b = await _metered(sdk, product, calls, 2), await _metered(sdk, product, jobs, 5)
    clock, cus, start = await _clocked(stack, "remetered")
    sub = await sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": a}], "billing_mode": {"type": mode}}
    )
    await stack.settle()
    await _usage(stack, redis, cus, "remetered", "calls", 100, start + 60, "calls")

    change = start + HOUR
    await _advance(stack, clock, change)
    item = sub["items"]["data"][0]["id"]
    await sdk.v1.subscriptions.update_async(sub.id, {"items": [{"id": item, "price": b}]})
    await stack.settle()
    await _usage(stack, redis, cus, "remetered", "jobs", 10, change + 60, "jobs")
    # A late event of the old meter, from before the change: billed by neither invoice in
    # Stripe (reported after the change), and attributed to the old price's period here.
    await _usage(stack, redis, cus, "remetered", "calls", 1, start + 120, "late")

    await _projection_is_preview(stack, "remetered", cus, sub.id)
    status, doc = await stack.get("/v1/customers/remetered/usage")
    assert status == 200
    assert doc["invoice"]["total"] == expected
    assert [(i["meter"], i["quantity"]) for i in doc["items"]] == [("jobs", "10")]
    unattributed = await db.fetchval(
        "SELECT count(*) FROM usage_rollups WHERE meter = 'calls' AND subscription_item IS NULL"
    )
    assert unattributed == 0
    periods = await db.fetch(
        "SELECT meter, price FROM subscription_item_periods WHERE item = $1 ORDER BY period_start",
        item,
    )
    assert [(r["meter"], r["price"]) for r in periods] == [(calls, a), (jobs, b)]


async def test_two_items_on_one_meter_each_bill_every_event(stack: Stack, redis: Redis) -> None:
    sdk = stack.sdk
    calls = await _meter(sdk, "calls")
    product = (await sdk.v1.products.create_async({"name": "API"})).id
    a, c = await _metered(sdk, product, calls, 2), await _metered(sdk, product, calls, 5)
    _, cus, start = await _clocked(stack, "twice")
    sub = await sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": a}, {"price": c}]}
    )
    await stack.settle()
    await _usage(stack, redis, cus, "twice", "calls", 100, start + 60, "calls")
    doc = await _projection_is_preview(stack, "twice", cus, sub.id)
    assert doc["invoice"]["total"] == 700
    assert sorted(i["quantity"] for i in doc["items"]) == ["100", "100"]


async def test_removing_the_item_the_events_went_to_leaves_them_on_the_other_item(
    stack: Stack, redis: Redis, db: asyncpg.Connection
) -> None:
    sdk = stack.sdk
    calls = await _meter(sdk, "calls")
    product = (await sdk.v1.products.create_async({"name": "API"})).id
    a, c = await _metered(sdk, product, calls, 2), await _metered(sdk, product, calls, 5)
    clock, cus, start = await _clocked(stack, "halved")
    sub = await sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": a}, {"price": c}]}
    )
    await stack.settle()
    await _usage(stack, redis, cus, "halved", "calls", 100, start + 60, "calls")
    # The aggregator gave the events to one of the two items; that one is removed.
    [picked] = await db.fetch(
        "SELECT DISTINCT subscription_item FROM usage_events WHERE event_id LIKE 'calls-%'"
    )
    await _advance(stack, clock, start + HOUR)
    await sdk.v1.subscriptions.update_async(
        sub.id, {"items": [{"id": picked["subscription_item"], "deleted": True}]}
    )
    doc = await _projection_is_preview(stack, "halved", cus, sub.id)
    # The removed price's 100 calls as an invoice item, and the same calls on the other price.
    assert doc["invoice"]["total"] == 700
    assert [i["quantity"] for i in doc["items"]] == ["100"]


async def test_a_removed_then_readded_price_keeps_its_late_usage_on_the_removed_item(
    stack: Stack, redis: Redis, db: asyncpg.Connection
) -> None:
    sdk = stack.sdk
    calls = await _meter(sdk, "calls")
    product = (await sdk.v1.products.create_async({"name": "API"})).id
    a = await _metered(sdk, product, calls, 2)
    flat = await sdk.v1.prices.create_async(
        {
            "product": product,
            "currency": "usd",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
        }
    )
    clock, cus, start = await _clocked(stack, "readded")
    sub = await sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": a}, {"price": flat.id}]}
    )
    await stack.settle()
    [old] = [i["id"] for i in sub["items"]["data"] if i["price"]["id"] == a]
    await _usage(stack, redis, cus, "readded", "calls", 10, start + 60, "first")

    await _advance(stack, clock, start + HOUR)
    await sdk.v1.subscriptions.update_async(sub.id, {"items": [{"id": old, "deleted": True}]})
    await _advance(stack, clock, start + 2 * HOUR)
    again = await sdk.v1.subscriptions.update_async(sub.id, {"items": [{"price": a}]})
    [new] = [i["id"] for i in again["items"]["data"] if i["price"]["id"] == a]
    await stack.settle()
    await _usage(stack, redis, cus, "readded", "calls", 5, start + 2 * HOUR + 60, "second")
    await _usage(stack, redis, cus, "readded", "calls", 1, start + 120, "late")

    doc = await _projection_is_preview(stack, "readded", cus, sub.id)
    # Flexible (the default): the 10 calls up to the removal as an invoice item, then 5 calls,
    # and the next period's fee.
    assert doc["invoice"]["total"] == 20 + 10 + 900
    late = await db.fetch("SELECT subscription_item FROM usage_events WHERE event_id = 'late-0'")
    assert [r["subscription_item"] for r in late] == [old], (old, new)


@pytest.mark.parametrize("synced", [False, True], ids=["webhooks", "meter-sync"])
async def test_pending_prorations_are_on_the_projected_invoice(
    stack: Stack, redis: Redis, synced: bool
) -> None:
    if synced:  # no webhook arrives: `meter sync` alone must find the pending items
        stack.emu.config = dataclasses.replace(stack.emu.config, webhook_url=None)
    sdk = stack.sdk
    calls = await _meter(sdk, "calls")
    product = (await sdk.v1.products.create_async({"name": "API"})).id
    a = await _metered(sdk, product, calls, 2)
    flat = await sdk.v1.prices.create_async(
        {
            "product": product,
            "currency": "usd",
            "unit_amount": 2000,
            "recurring": {"interval": "month"},
        }
    )
    clock, cus, start = await _clocked(stack, "prorated")
    sub = await sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": a}, {"price": flat.id, "quantity": 3}]}
    )
    await _advance(stack, clock, start + 10 * 86400)
    [licensed] = [i["id"] for i in sub["items"]["data"] if i["price"]["id"] == flat.id]
    await sdk.v1.subscriptions.update_async(
        sub.id,
        {"items": [{"id": licensed, "quantity": 5}], "proration_behavior": "create_prorations"},
    )
    if synced:
        async with stack.billing.connection() as conn:
            await sync(conn, stack.billing.gateway, "acme", stack.billing.upkeep)
    else:
        await stack.settle()
    await _usage(stack, redis, cus, "prorated", "calls", 7, start + 60, "calls")
    doc = await _projection_is_preview(stack, "prorated", cus, sub.id)
    pending = [ln for ln in doc["invoice"]["lines"] if ln["kind"] == "pending"]
    assert len(pending) == 2, doc["invoice"]
    assert sum(ln["amount"] for ln in pending) > 0
    # 7 calls × 2, the next period's 5 × 2000, and the 2 more seats for the rest of this one.
    assert doc["invoice"]["total"] > 14 + 10_000


async def test_an_invoice_takes_the_pending_items_off_the_projection(
    stack: Stack, redis: Redis
) -> None:
    sdk = stack.sdk
    calls = await _meter(sdk, "calls")
    product = (await sdk.v1.products.create_async({"name": "API"})).id
    a, b = await _metered(sdk, product, calls, 2), await _metered(sdk, product, calls, 5)
    clock, cus, start = await _clocked(stack, "rolled")
    sub = await sdk.v1.subscriptions.create_async({"customer": cus, "items": [{"price": a}]})
    await stack.settle()
    await _usage(stack, redis, cus, "rolled", "calls", 4, start + 60, "calls")
    await _advance(stack, clock, start + HOUR)
    item = sub["items"]["data"][0]["id"]
    await sdk.v1.subscriptions.update_async(sub.id, {"items": [{"id": item, "price": b}]})
    await stack.settle()
    assert (await _projection_is_preview(stack, "rolled", cus, sub.id))["invoice"]["total"] == 8
    # The period rolls: its invoice takes the invoice item, the next one starts empty.
    end = sub["items"]["data"][0]["current_period_end"]
    await _advance(stack, clock, end + 60)
    doc = await _projection_is_preview(stack, "rolled", cus, sub.id)
    assert doc["invoice"]["total"] == 0
    # The period before: what its invoice billed, the invoice item included.
    [cycle] = [
        i
        for i in (await sdk.v1.invoices.list_async({"customer": cus})).data
        if i.billing_reason == "subscription_cycle"
    ]
    status, previous = await stack.get("/v1/customers/rolled/usage?period=previous")
    assert status == 200, previous
    assert previous["invoice"]["subtotal"] == cycle.subtotal == 8


async def test_a_change_made_through_our_api_keeps_the_old_price_until_its_time_is_known(
    stack: Stack, redis: Redis
) -> None:
    # No webhook arrives: Stripe's answer is all meter knows of the change, and it does not say
    # when the change took effect; `meter sync` later records it at the sync.
    stack.emu.config = dataclasses.replace(stack.emu.config, webhook_url=None)
    sdk = stack.sdk
    calls = await _meter(sdk, "calls")
    product = (await sdk.v1.products.create_async({"name": "API"})).id
    a, b = await _metered(sdk, product, calls, 2), await _metered(sdk, product, calls, 5)
    clock, cus, start = await _clocked(stack, "answered")
    sub = await sdk.v1.subscriptions.create_async({"customer": cus, "items": [{"price": a}]})
    async with stack.billing.connection() as conn:
        await sync(conn, stack.billing.gateway, "acme", stack.billing.upkeep)
    await _usage(stack, redis, cus, "answered", "calls", 100, start + 60, "before")
    await _advance(stack, clock, start + HOUR)

    status, answer = await stack.post(
        "/v1/customers/answered/subscription/change-plan", {"price": b}
    )
    assert status == 200, answer
    preview = await sdk.v1.invoices.create_preview_async({"customer": cus, "subscription": sub.id})
    status, doc = await stack.get("/v1/customers/answered/usage")
    assert status == 200, doc
    # Flexible: the 100 calls at 2 as an invoice item. meter does not know that item yet, but
    # prices the calls at the price that billed them, never at the new one (500).
    assert doc["invoice"]["total"] == preview.total == 200
    assert [(i["price"], i["quantity"]) for i in doc["items"]] == [(a, "100")]

    async with stack.billing.connection() as conn:
        await sync(conn, stack.billing.gateway, "acme", stack.billing.upkeep)
    doc = await _projection_is_preview(stack, "answered", cus, sub.id)
    assert [(i["price"], i["quantity"]) for i in doc["items"]] == [(b, "0")]


async def test_usage_unreported_at_a_flexible_price_change_is_carried_not_lost(
    stack: Stack, redis: Redis
) -> None:
    # The change is recent: the old price's period ended less than the grace period ago.
    sdk = stack.sdk
    calls = await _meter(sdk, "calls")
    product = (await sdk.v1.products.create_async({"name": "API"})).id
    a, b = await _metered(sdk, product, calls, 2), await _metered(sdk, product, calls, 5)
    start = int(time.time()) - 1800
    clock, cus = await clock_customer(sdk, "unsent", start)
    sub = await sdk.v1.subscriptions.create_async({"customer": cus, "items": [{"price": a}]})
    await stack.settle()
    events = [
        {"id": f"u{i}", "customer": "unsent", "meter": "calls", "value": 1, "timestamp": start + 60}
        for i in range(100)
    ]
    response = await stack.client.post("/v1/events", data=orjson.dumps(events), headers=stack.auth)
    assert response.status == 200, await response.text()
    async with Worker(stack.settings, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == 100
    # Aggregated, not reported yet, when the price changes: Stripe's invoice item bills none
    # of it, and nothing bills the old price's window any more.
    await _advance(stack, clock, start + 600)
    item = sub["items"]["data"][0]["id"]
    await sdk.v1.subscriptions.update_async(sub.id, {"items": [{"id": item, "price": b}]})
    await stack.settle()
    async with Reporter(
        stack.settings.replace(reporter_concurrency=1), directory=wiring.customer_directory()
    ) as reporter:
        await reporter.once()
    doc = await _projection_is_preview(stack, "unsent", cus, sub.id)
    # Carried into the new price's period, billed there.
    assert doc["invoice"]["total"] == 100 * 5
