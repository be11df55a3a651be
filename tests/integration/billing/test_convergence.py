"""Shuffled and duplicated webhook deliveries end in the same state as Stripe's (which is what
in-order delivery produces), and the self-service calls that need no state of their own."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from meter.config import Settings
from meter.stripe_emulator import pricing

from .conftest import Stack, catalog, clock_customer, hour_now, make_stack


def _unix(value: dt.datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


async def scenario(stack: Stack) -> list[str]:
    """Two customers through create, upgrade, failure, payment, cancel; returns their ids."""
    cat = await catalog(stack.sdk)
    start = hour_now()
    subs = []
    for n in range(2):
        clock, cus = await clock_customer(stack.sdk, f"conv-{n}", start)
        sub = await stack.sdk.v1.subscriptions.create_async(
            {"customer": cus, "items": [{"price": cat["basic"]}, {"price": cat["metered"]}]}
        )
        item = next(i for i in sub["items"].data if i.price.id == cat["basic"])
        await stack.sdk.v1.subscriptions.update_async(
            sub.id, {"items": [{"id": item.id, "price": cat["pro"]}]}
        )
        end = pricing.add_interval(start, "month", 1)
        if n == 0:
            stack.payments(cus, "fail")
        await stack.sdk.v1.test_helpers.test_clocks.advance_async(
            clock, {"frozen_time": end + 7200}
        )
        if n == 1:
            await stack.sdk.v1.subscriptions.update_async(sub.id, {"cancel_at_period_end": True})
            await stack.sdk.v1.customers.update_async(cus, {"email": "new@example.com"})
        subs.append(sub.id)
    return subs


async def assert_matches_stripe(stack: Stack, subs: list[str]) -> None:
    async with stack.billing.connection() as conn:
        for sub_id in subs:
            truth: Any = await stack.sdk.v1.subscriptions.retrieve_async(sub_id)
            row = await conn.fetchrow("SELECT * FROM subscriptions WHERE id = $1", sub_id)
            assert row is not None
            first = truth["items"].data[0]
            assert (
                row["status"],
                row["cancel_at_period_end"],
                row["latest_invoice"],
                _unix(row["current_period_start"]),
                _unix(row["current_period_end"]),
            ) == (
                truth.status,
                truth.cancel_at_period_end,
                truth.latest_invoice,
                first.current_period_start,
                first.current_period_end,
            )
            items = await conn.fetch(
                "SELECT id, price FROM subscription_items"
                " WHERE subscription = $1 AND removed_at IS NULL",
                sub_id,
            )
            assert {(r["id"], r["price"]) for r in items} == {
                (i.id, i.price.id) for i in truth["items"].data
            }
            customer = await stack.sdk.v1.customers.retrieve_async(str(truth.customer))
            stored = await conn.fetchrow(
                "SELECT email, external_id FROM customers WHERE stripe_id = $1", customer.id
            )
            assert stored is not None
            assert stored["email"] == customer.email
            assert stored["external_id"] == customer.metadata["meter_customer"]
            for inv in (await stack.sdk.v1.invoices.list_async({"customer": customer.id})).data:
                got = await conn.fetchrow(
                    "SELECT status, total, amount_paid FROM invoices WHERE id = $1", inv.id
                )
                assert got is not None
                assert (got["status"], got["total"], got["amount_paid"]) == (
                    inv.status,
                    inv.total,
                    inv.amount_paid,
                )
        open_dunning = await conn.fetchval("SELECT count(*) FROM dunning WHERE resolved_at IS NULL")
        assert open_dunning == 1  # conv-0's failed renewal


@pytest.fixture
async def chaotic(settings: Settings, api_key: str) -> AsyncIterator[Stack]:
    async for s in make_stack(
        settings, api_key, webhook_shuffle=True, webhook_duplicate_probability=0.5
    ):
        yield s


async def test_in_order_delivery_matches_stripe(stack: Stack) -> None:
    subs = await scenario(stack)
    await stack.settle()
    await assert_matches_stripe(stack, subs)


async def test_shuffled_duplicated_delivery_converges(chaotic: Stack) -> None:
    subs = await scenario(chaotic)
    await chaotic.settle()
    await assert_matches_stripe(chaotic, subs)
    async with chaotic.billing.connection() as conn:
        outcomes = {
            r["outcome"] for r in await conn.fetch("SELECT DISTINCT outcome FROM stripe_events")
        }
    # The run really was out of order: some events arrived after newer ones.
    assert "stale" in outcomes
    duplicates = chaotic.billing.metrics.webhook_events
    assert any(
        s.labels["outcome"] == "duplicate" and s.value > 0
        for m in duplicates.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )


async def test_portal_setup_intent_and_checkout_for_new_customer(stack: Stack) -> None:
    cat = await catalog(stack.sdk)
    status, doc = await stack.post("/v1/customers/new-1/portal-session")
    assert (status, doc["error"]["type"]) == (404, "not_found")
    status, doc = await stack.post(
        "/v1/customers/new-1/checkout-session",
        {"prices": [{"price": cat["basic"], "quantity": 3}], "success_url": "https://a/ok"},
    )
    assert status == 200, doc
    await stack.complete_checkout(doc["id"])
    await stack.settle()
    status, view = await stack.get("/v1/customers/new-1/subscription")
    assert view["subscription"]["status"] == "active"
    assert view["subscription"]["items"][0]["quantity"] == 3
    status, portal = await stack.post(
        "/v1/customers/new-1/portal-session", {"return_url": "https://a/account"}
    )
    assert status == 200
    assert portal["url"].startswith("https://billing.stripe.com/")
    status, intent = await stack.post("/v1/customers/new-1/payment-method/setup-intent")
    assert status == 200
    assert intent["client_secret"].startswith(intent["id"])
    status, doc = await stack.post(
        "/v1/customers/new-1/subscription/change-plan", {"price": "price_nope", "preview": True}
    )
    assert (status, doc["error"]["type"]) == (404, "not_found")
    status, doc = await stack.post("/v1/customers/new-1/checkout-session", {"prices": []})
    assert (status, doc["error"]["param"]) == (400, "prices")
    response = await stack.client.get("/v1/customers/new-1/subscription")
    assert response.status == 401
