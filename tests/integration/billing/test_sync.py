"""`meter sync`: a missed webhook history is repaired from Stripe, page by page, resumably."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import orjson

from meter import wiring
from meter.billing import cli
from meter.billing.backfill import sync

from .conftest import Stack, catalog


async def test_sync_backfills_and_resumes(stack: Stack) -> None:
    # Nothing is delivered: as if the webhook endpoint had been missing.
    stack.emu.config = dataclasses.replace(stack.emu.config, webhook_url=None)
    cat = await catalog(stack.sdk)
    customers = []
    coupon = await stack.sdk.v1.coupons.create_async({"percent_off": 10, "duration": "forever"})
    for n in range(5):
        cus = await stack.sdk.v1.customers.create_async(
            {"email": f"s{n}@x.io", "metadata": {"meter_customer": f"sync-{n}"}}
        )
        create: Any = {"customer": cus.id, "items": [{"price": cat["basic"]}]}
        if n == 2:
            create["discounts"] = [{"coupon": coupon.id}]
        await stack.sdk.v1.subscriptions.create_async(create)
        customers.append(cus.id)
    gateway = stack.billing.gateway
    async with stack.billing.connection() as conn:
        # Interrupted after two pages of two: the product and two of the three prices.
        counts, _ = await sync(
            conn, gateway, "acme", wiring.usage_upkeep(), max_pages=2, page_size=2
        )
        assert counts == {"product": 1, "price": 2}
        assert (
            await conn.fetchval("SELECT cursor FROM billing_sync_cursors WHERE resource = 'price'")
            is not None
        )
        counts, effects = await sync(conn, gateway, "acme", wiring.usage_upkeep(), page_size=2)
        # The price listing resumed after its cursor (a finished listing starts over).
        assert counts == {
            "product": 1,
            "price": 1,
            "billing.meter": 1,
            "customer": 5,
            "subscription": 5,
            "invoiceitem": 0,
            "invoice": 5,
        }
        assert await conn.fetchval("SELECT count(*) FROM prices") == 3
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM billing_sync_cursors WHERE cursor IS NOT NULL"
            )
            == 0
        )
        rows = await conn.fetch(
            "SELECT c.external_id, s.status FROM customers c"
            " JOIN subscriptions s ON s.customer = c.stripe_id ORDER BY c.external_id"
        )
        assert [(r["external_id"], r["status"]) for r in rows] == [
            (f"sync-{n}", "active") for n in range(5)
        ]
        assert ("acme", "sync-0") in effects.reattribute
        # The listing expands discounts down to the coupon's terms; they are stored with it.
        discounts = await conn.fetch(
            "SELECT s.discounts FROM subscriptions s JOIN customers c ON c.stripe_id = s.customer"
            " ORDER BY c.external_id"
        )
        stored = [orjson.loads(r["discounts"]) for r in discounts]
        assert [len(d) for d in stored] == [0, 0, 1, 0, 0]
        assert stored[2][0]["coupon"] == {
            "id": coupon.id,
            "percent_off": 10,
            "amount_off": None,
            "currency": None,
            "duration": "forever",
            "duration_in_months": None,
        }
        # Safe to run again at any time: same rows.
        await sync(conn, gateway, "acme", wiring.usage_upkeep())
        assert await conn.fetchval("SELECT count(*) FROM subscriptions") == 5
    status, view = await stack.get("/v1/customers/sync-3/subscription")
    assert (status, view["stripe_customer"]) == (200, customers[3])


async def test_sync_command(stack: Stack, capsys: object) -> None:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["sync", "--only", "product"])
    await stack.sdk.v1.products.create_async({"name": "Solo"})
    assert await cli.run_sync(stack.settings, args) == 0
    async with stack.billing.connection() as conn:
        assert await conn.fetchval("SELECT name FROM products") == "Solo"
    assert args.func is cli.sync_cmd
