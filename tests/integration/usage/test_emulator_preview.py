"""End to end against the Stripe emulator: a subscription synced by webhooks, usage posted through
ingest and aggregated; the usage API's invoice equals the emulator's invoice preview for the same
usage, to the cent."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter import wiring
from meter.billing.backfill import sync
from tests.integration.billing.conftest import Stack, clock_customer, hour_now

TIERS: list[dict[str, Any]] = [
    {"up_to": 100, "unit_amount_decimal": "2"},
    {"up_to": "inf", "unit_amount_decimal": "0.5", "flat_amount": 300},
]


@pytest.mark.parametrize(
    ("coupon", "default_tax", "flat_tax"),
    [
        (None, None, None),
        ({"percent_off": 25, "duration": "forever"}, None, None),
        (
            {
                "amount_off": 1234,
                "currency": "usd",
                "duration": "repeating",
                "duration_in_months": 3,
            },
            None,
            None,
        ),
        (None, {"percentage": 19, "inclusive": False}, None),
        # An item's own (inclusive) rate replaces the default on its lines; the other lines keep
        # the default; the discount is shared over the lines before tax.
        (
            {"percent_off": 12.5, "duration": "forever"},
            {"percentage": 8.875, "inclusive": False},
            {"percentage": 7, "inclusive": True},
        ),
    ],
    ids=["plain", "percent-forever", "amount-repeating", "tax-exclusive", "coupon-mixed-tax"],
)
async def test_invoice_equals_the_emulator_preview(
    stack: Stack,
    redis: Redis,
    coupon: dict[str, Any] | None,
    default_tax: dict[str, Any] | None,
    flat_tax: dict[str, Any] | None,
) -> None:
    graduated = {"billing_scheme": "tiered", "tiers_mode": "graduated", "tiers": TIERS}
    doc, preview = await usage_and_preview(
        stack, redis, graduated, coupon=coupon, default_tax=default_tax, flat_tax=flat_tax
    )
    invoice = assert_invoice_equals(doc, preview)
    assert (invoice["discount"] > 0) == (coupon is not None)
    assert (invoice["tax"] + invoice["tax_included"] > 0) == (default_tax is not None)
    if default_tax == {"percentage": 19, "inclusive": False} and flat_tax is None:
        # By hand, per line: 529 × 19% = 100.51 → 101; 6000 × 19% = 1140.
        assert (invoice["tax"], invoice["total"]) == (101 + 1140, 6529 + 1241)
    metered = [i for i in doc["items"] if i["usage_type"] == "metered"]
    assert [(m["quantity"], m["pricing_model"]) for m in metered] == [("157.5", "tiered_graduated")]
    # 100 × 2 + 57.5 × 0.5 + 300 flat = 528.75 → 529
    assert metered[0]["amount"] == 529


async def test_graduated_price_synced_by_meter_sync_equals_the_emulator_preview(
    stack: Stack, redis: Redis
) -> None:
    # No webhook arrives: `meter sync` alone copies the catalog and the subscription, and must
    # ask Stripe for the price's tiers (they come only when expanded).
    stack.emu.config = dataclasses.replace(stack.emu.config, webhook_url=None)
    graduated = {"billing_scheme": "tiered", "tiers_mode": "graduated", "tiers": TIERS}
    doc, preview = await usage_and_preview(stack, redis, graduated, synced=True)
    assert_invoice_equals(doc, preview)
    metered = [i for i in doc["items"] if i["usage_type"] == "metered"]
    assert [m["amount"] for m in metered] == [529]


# The other metered pricing models, each with a coupon, through the same pipeline. The usage
# (157.5) crosses a volume tier and leaves a partial package, so rounding shows.
@pytest.mark.parametrize(
    ("metered_price", "model"),
    [
        ({"unit_amount_decimal": "3.3"}, "per_unit"),
        (
            {
                "billing_scheme": "tiered",
                "tiers_mode": "volume",
                "tiers": [
                    {"up_to": 100, "unit_amount_decimal": "4"},
                    {"up_to": "inf", "unit_amount_decimal": "2.5", "flat_amount": 150},
                ],
            },
            "tiered_volume",
        ),
        (
            {"unit_amount": 250, "transform_quantity": {"divide_by": 50, "round": "up"}},
            "package",
        ),
    ],
    ids=["per-unit-decimal", "volume", "package"],
)
async def test_each_pricing_model_with_a_coupon_equals_the_emulator_preview(
    stack: Stack, redis: Redis, metered_price: dict[str, Any], model: str
) -> None:
    coupon = {"percent_off": 15, "duration": "forever"}
    doc, preview = await usage_and_preview(stack, redis, metered_price, coupon=coupon)
    invoice = assert_invoice_equals(doc, preview)
    assert invoice["discount"] > 0
    metered = [i for i in doc["items"] if i["usage_type"] == "metered"]
    assert [(m["quantity"], m["pricing_model"]) for m in metered] == [("157.5", model)]


async def usage_and_preview(
    stack: Stack,
    redis: Redis,
    metered_price: dict[str, Any],
    *,
    coupon: dict[str, Any] | None = None,
    default_tax: dict[str, Any] | None = None,
    flat_tax: dict[str, Any] | None = None,
    synced: bool = False,
) -> tuple[Any, Any]:
    """A subscription (this metered price + a flat fee × 3) made in the emulator and synced by
    its webhooks; usage of 157.5 posted through ingest and aggregated, and reported to Stripe;
    then our usage answer and the emulator's invoice preview."""
    sdk = stack.sdk
    meter = await sdk.v1.billing.meters.create_async(
        {"display_name": "Calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )
    product = await sdk.v1.products.create_async({"name": "API"})
    price = await sdk.v1.prices.create_async(
        {  # type: ignore[arg-type]
            "product": product.id,
            "currency": "usd",
            **metered_price,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    flat = await sdk.v1.prices.create_async(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 2000,
            "recurring": {"interval": "month"},
        }
    )
    start = hour_now() - 3 * 3600
    _, cus = await clock_customer(sdk, "emu-1", start)
    create: Any = {
        "customer": cus,
        "items": [{"price": price.id}, {"price": flat.id, "quantity": 3}],
    }
    for tax, where in ((default_tax, create), (flat_tax, create["items"][1])):
        if tax is not None:
            rate = await sdk.v1.tax_rates.create_async({"display_name": "VAT", **tax})
            where["default_tax_rates" if where is create else "tax_rates"] = [rate.id]
    if coupon is not None:
        # Synced from the webhook, which names the discount by id only: billing must read the
        # coupon's terms from Stripe (expanded) to price with it.
        create["discounts"] = [{"coupon": (await sdk.v1.coupons.create_async(coupon)).id}]
    await sdk.v1.subscriptions.create_async(create)
    if synced:
        async with stack.billing.connection() as conn:
            await sync(conn, stack.billing.gateway, "acme", stack.billing.upkeep)
    else:
        await stack.settle()

    values = [40, 60, 50, 7, 0.5]
    events = [
        {"id": f"e{i}", "customer": "emu-1", "meter": "calls", "value": v, "timestamp": start}
        for i, v in enumerate(values)
    ]
    response = await stack.client.post("/v1/events", data=orjson.dumps(events), headers=stack.auth)
    assert response.status == 200, await response.text()
    async with Worker(stack.settings, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == len(values)
    # The same usage, reported to Stripe (the reporter's job in production).
    await sdk.v1.billing.meter_events.create_async(
        {
            "event_name": "calls",
            "timestamp": start,
            "identifier": "usage-emu-1",
            "payload": {"stripe_customer_id": cus, "value": "157.5"},
        }
    )
    preview = await sdk.v1.invoices.create_preview_async({"customer": cus})

    status, doc = await stack.get(f"/v1/customers/{cus}/usage")
    assert status == 200, doc
    return doc, preview


def assert_invoice_equals(doc: Any, preview: Any) -> Any:
    """Our projected invoice equals the preview: totals, currency, taxes, discount, lines."""
    invoice = doc["invoice"]
    assert invoice is not None, doc
    assert (invoice["subtotal"], invoice["total"], invoice["currency"]) == (
        preview.subtotal,
        preview.total,
        preview.currency,
    )
    taxes = preview.to_dict(recursive=True)["total_taxes"]
    exclusive = sum(t["amount"] for t in taxes if t["tax_behavior"] == "exclusive")
    inclusive = sum(t["amount"] for t in taxes if t["tax_behavior"] == "inclusive")
    assert (invoice["tax"], invoice["tax_included"]) == (exclusive, inclusive)
    assert invoice["discount"] == preview.subtotal - preview.total + exclusive
    assert sorted(line["amount"] for line in invoice["lines"]) == sorted(
        line.amount for line in preview.lines.data
    )
    return invoice
