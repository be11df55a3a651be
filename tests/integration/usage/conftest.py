"""Usage API fixtures: billing rows inserted straight into Postgres (the emulator is not the point
of most tests here), events posted through ingest and folded by the aggregator."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter import wiring
from meter.config import Settings
from meter.pricing import Price, price_from_stripe

Client = TestClient[object, object]
HOUR = 3600
DAY = 86400

GRADUATED = {
    "id": "price_grad",
    "currency": "usd",
    "billing_scheme": "tiered",
    "tiers_mode": "graduated",
    "tiers": [
        {"up_to": 100, "unit_amount_decimal": "2", "flat_amount": None},
        {"up_to": None, "unit_amount_decimal": "0.5", "flat_amount": 300},
    ],
    "recurring": {"interval": "month", "interval_count": 1, "usage_type": "metered"},
}
FLAT = {
    "id": "price_flat",
    "currency": "usd",
    "billing_scheme": "per_unit",
    "unit_amount": 2000,
    "unit_amount_decimal": "2000",
    "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
}


def engine_price(wire: dict[str, Any]) -> Price:
    return price_from_stripe(wire)


def at(unix: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix, dt.UTC)


@dataclass(frozen=True)
class Seeded:
    external_id: str
    stripe_id: str
    current: tuple[int, int]
    previous: tuple[int, int]


async def seed_customer(db: asyncpg.Connection, external_id: str, stripe_id: str) -> None:
    await db.execute(
        "INSERT INTO customers (stripe_id, tenant, external_id, event_created)"
        " VALUES ($1, 'acme', $2, 0)",
        stripe_id,
        external_id,
    )


async def seed_plan(db: asyncpg.Connection, external_id: str = "c-1") -> Seeded:
    """A customer on a monthly subscription: a graduated metered price on meter `calls` and a flat
    licensed price × 3. The current period began a day ago, so the previous one is still inside
    ingest's late window at its end."""
    stripe_id = f"cus_{external_id}"
    await seed_customer(db, external_id, stripe_id)
    start = int(time.time()) // HOUR * HOUR - DAY
    current = (start, start + 30 * DAY)
    previous = (start - 30 * DAY, start)
    await db.execute(
        "INSERT INTO billing_meters (id, event_name, formula, customer_key, value_key, status,"
        " event_created) VALUES ('mtr_calls', 'calls', 'sum', 'stripe_customer_id', 'value',"
        " 'active', 0) ON CONFLICT DO NOTHING"
    )
    for wire, meter in ((GRADUATED, "mtr_calls"), (FLAT, None)):
        recurring = wire["recurring"]
        await db.execute(
            "INSERT INTO prices (id, product, active, currency, billing_scheme, unit_amount,"
            " unit_amount_decimal, tiers_mode, tiers, recurring_interval,"
            " recurring_interval_count, usage_type, meter, event_created)"
            " VALUES ($1, 'prod_1', true, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, 0)"
            " ON CONFLICT DO NOTHING",
            wire["id"],
            wire["currency"],
            wire["billing_scheme"],
            wire.get("unit_amount"),
            wire.get("unit_amount_decimal"),
            wire.get("tiers_mode"),
            None if "tiers" not in wire else orjson.dumps(wire["tiers"]).decode(),
            recurring["interval"],
            recurring["interval_count"],
            recurring["usage_type"],
            meter,
        )
    sub = f"sub_{external_id}"
    await db.execute(
        "INSERT INTO subscriptions (id, customer, status, currency, current_period_start,"
        " current_period_end, stripe_created, event_created)"
        " VALUES ($1, $2, 'active', 'usd', $3, $4, $5, 0)",
        sub,
        stripe_id,
        at(current[0]),
        at(current[1]),
        at(previous[0]),
    )
    items = ((f"si_m_{external_id}", "price_grad", None, "mtr_calls"),)
    items += ((f"si_f_{external_id}", "price_flat", 3, None),)
    for item, price, quantity, meter in items:
        await db.execute(
            "INSERT INTO subscription_items (id, subscription, price, quantity, meter,"
            " current_period_start, current_period_end) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            item,
            sub,
            price,
            quantity,
            meter,
            at(current[0]),
            at(current[1]),
        )
        for a, b in (previous, current):
            await db.execute(
                "INSERT INTO subscription_item_periods (item, period_start, period_end, meter)"
                " VALUES ($1, $2, $3, $4)",
                item,
                at(a),
                at(b),
                meter,
            )
    return Seeded(external_id, stripe_id, current, previous)


async def post_events(client: Client, api_key: str, events: list[dict[str, Any]]) -> None:
    response = await client.post(
        "/v1/events",
        data=orjson.dumps(events),
        headers={"Authorization": f"Bearer {api_key}"},
    )
    doc = await response.json()
    assert (response.status, doc["accepted"]) == (200, len(events)), doc


def calls(customer: str, tag: str, values: list[int], when: int) -> list[dict[str, Any]]:
    return [
        {"id": f"{tag}-{i}", "customer": customer, "meter": "calls", "value": v, "timestamp": when}
        for i, v in enumerate(values)
    ]


async def drain(settings: Settings, redis: Redis) -> int:
    async with Worker(settings, redis, attributor=wiring.attributor()) as worker:
        return await worker.drain()


async def get(client: Client, api_key: str, path: str) -> tuple[int, Any]:
    response = await client.get(path, headers={"Authorization": f"Bearer {api_key}"})
    return response.status, await response.json()


def d(value: str) -> Decimal:
    return Decimal(value)


# The billing tests' stack (meter app + Stripe emulator delivering webhooks), for the preview test.
from tests.integration.billing.conftest import stack  # noqa: E402, F401
