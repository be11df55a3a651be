"""A tiered price's tiers reach our copy although Stripe sends them only when expanded: a webhook
brings the price without them, billing reads them once (expanded) and never erases them."""

from __future__ import annotations

import orjson

from .conftest import Stack

TIERS = [
    {"up_to": 100, "unit_amount_decimal": "2"},
    {"up_to": "inf", "unit_amount_decimal": "0.5", "flat_amount": 300},
]


async def test_webhook_price_gets_its_tiers_once_and_keeps_them(stack: Stack) -> None:
    meter = await stack.sdk.v1.billing.meters.create_async(
        {"display_name": "Calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )
    product = await stack.sdk.v1.products.create_async({"name": "API"})
    price = await stack.sdk.v1.prices.create_async(
        {
            "product": product.id,
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": TIERS,  # type: ignore[typeddict-item]
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    await stack.settle()

    async def stored() -> list[dict[str, object]]:
        async with stack.billing.connection() as conn:
            tiers = await conn.fetchval("SELECT tiers FROM prices WHERE id = $1", price.id)
        assert tiers is not None
        return list(orjson.loads(tiers))

    def reads() -> list[str]:
        return [
            str(r["params"])
            for r in stack.emu.state.request_log
            if r["method"] == "GET" and r["path"] == f"/v1/prices/{price.id}"
        ]

    want = [(100, "2", None), (None, "0.5", 300)]
    got = await stored()
    assert [(t["up_to"], t["unit_amount_decimal"], t["flat_amount"]) for t in got] == want
    assert len(reads()) == 1
    assert "tiers" in reads()[0]
    # A later event without tiers (a metadata change) does not erase them.
    await stack.sdk.v1.prices.update_async(price.id, {"metadata": {"plan": "api"}})
    await stack.settle()
    assert await stored() == got
    async with stack.billing.connection() as conn:
        metadata = await conn.fetchval("SELECT metadata FROM prices WHERE id = $1", price.id)
    assert orjson.loads(metadata) == {"plan": "api"}
