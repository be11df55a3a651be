"""Pricing per dimension end to end against the Stripe emulator: one subscription with the meter's
own price and a price of its own for `model=large` (on a Stripe meter of its own); usage posted
through ingest, aggregated and reported by the reporter. Each Stripe meter's total equals the
accepted usage of its models (the test's own sums), and the usage API's projected invoice,
with a line per price, equals the emulator's invoice preview to the cent."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter import wiring
from reporter.worker import Reporter
from tests.integration.billing.conftest import Stack, clock_customer, hour_now
from tests.integration.reporter.conftest import control

from .test_emulator_preview import assert_invoice_equals

# Per aggregation of `tokens`: the Stripe totals and the amounts by hand. A count meter (a local
# definition on Stripe `sum` meters) is reported as its events' count to both Stripe meters.
EXPECTED = {
    # 425.5 × 1.7 = 723.35 → 723; 381 × 0.3 = 114.3 → 114
    "sum": ({"tokens_large": Decimal("425.5"), "tokens": Decimal(381)}, [114, 723]),
    # 2 × 1.7 = 3.4 → 3; 3 × 0.3 = 0.9 → 1
    "count": ({"tokens_large": Decimal(2), "tokens": Decimal(3)}, [1, 3]),
}


@pytest.mark.parametrize("aggregation", ["sum", "count"])
async def test_two_models_priced_differently_on_one_subscription(
    stack: Stack, redis: Redis, aggregation: str
) -> None:
    sdk = stack.sdk
    own = await sdk.v1.billing.meters.create_async(
        {
            "display_name": "Tokens",
            "event_name": "tokens",
            "default_aggregation": {"formula": "sum"},
        }
    )
    large = await sdk.v1.billing.meters.create_async(
        {
            "display_name": "Tokens (large)",
            "event_name": "tokens_large",
            "default_aggregation": {"formula": "sum"},
        }
    )
    product = await sdk.v1.products.create_async({"name": "LLM"})
    prices: dict[str, Any] = {}
    for name, meter, amount in (("own", own, "0.3"), ("large", large, "1.7")):
        prices[name] = await sdk.v1.prices.create_async(
            {
                "product": product.id,
                "currency": "usd",
                "unit_amount_decimal": amount,
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            }
        )
    start = hour_now() - 3 * 3600
    _, cus = await clock_customer(sdk, "dim-1", start)
    await sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": prices["own"].id}, {"price": prices["large"].id}]}
    )
    await stack.settle()
    async with stack.billing.connection() as conn:
        await conn.execute(
            "INSERT INTO meter_dimensions (tenant, meter, effective_from, keys)"
            " VALUES ('acme', 'tokens', to_timestamp($1), '{model}')",
            start - 3600,
        )
        await conn.execute(
            "INSERT INTO meter_price_mappings (tenant, meter, filter, event_name, price)"
            " VALUES ('acme', 'tokens', '{\"model\": \"large\"}', 'tokens_large', $1)",
            prices["large"].id,
        )
        if aggregation == "count":
            await conn.execute(
                "INSERT INTO meter_definitions (tenant, meter, aggregation)"
                " VALUES ('acme', 'tokens', 'count')"
            )

    rows = [("large", 400), ("small", 70), ("large", 25.5), (None, 11), ("small", 300)]
    events = [
        {
            "id": f"t{i}",
            "customer": "dim-1",
            "meter": "tokens",
            "value": v,
            "timestamp": start + 60 + i,
            "properties": {} if m is None else {"model": m},
        }
        for i, (m, v) in enumerate(rows)
    ]
    response = await stack.client.post("/v1/events", data=orjson.dumps(events), headers=stack.auth)
    assert response.status == 200, await response.text()
    async with Worker(stack.settings, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == len(rows)
    async with Reporter(stack.settings, directory=wiring.customer_directory()) as reporter:
        assert await reporter.once() > 0
        assert await reporter.once() == 0

    totals = {}
    for name, meter in (("tokens", own), ("tokens_large", large)):
        doc = await control(stack.running, "GET", f"/meters/{meter.id}/totals")
        totals[name] = Decimal(str(doc["totals"].get(cus, 0)))
    stripe_totals, amounts = EXPECTED[aggregation]
    assert totals == stripe_totals

    preview = await sdk.v1.invoices.create_preview_async({"customer": cus})
    status, doc = await stack.get(f"/v1/customers/{cus}/usage")
    assert status == 200, doc
    assert_invoice_equals(doc, preview)
    by_price = {i["price"]: i for i in doc["items"]}
    assert Decimal(by_price[prices["large"].id]["quantity"]) == stripe_totals["tokens_large"]
    assert Decimal(by_price[prices["own"].id]["quantity"]) == stripe_totals["tokens"]
    assert sorted(line["amount"] for line in doc["invoice"]["lines"]) == amounts
