"""GET /v1/customers/{id}/usage after a cancel now: the final invoice bills the metered usage
of [period start, cancel) and no licensed fee (paid in advance), as Stripe's `invoice_now` does
(https://docs.stripe.com/api/subscriptions/cancel)."""

from __future__ import annotations

import time
from decimal import Decimal

import asyncpg
from redis.asyncio import Redis

from meter.config import Settings
from meter.pricing import line_amount

from .conftest import (
    GRADUATED,
    HOUR,
    Client,
    at,
    calls,
    drain,
    engine_price,
    get,
    post_events,
    seed_plan,
)


async def test_canceled_now_projects_the_final_invoice(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    seeded = await seed_plan(db, "c-fin")
    await post_events(client, api_key, calls("c-fin", "a", [40, 60], int(time.time()) - 3 * HOUR))
    assert await drain(settings, redis) == 2
    ended = int(time.time()) // HOUR * HOUR - HOUR
    # What the billing module stores for customer.subscription.deleted (store._end_periods).
    await db.execute(
        "UPDATE subscriptions SET status = 'canceled', canceled_at = $2, ended_at = $2"
        " WHERE id = $1",
        "sub_c-fin",
        at(ended),
    )
    await db.execute(
        "UPDATE subscription_item_periods SET period_end = $2"
        " WHERE item = ANY($1::text[]) AND period_start < $2 AND period_end > $2",
        ["si_m_c-fin", "si_f_c-fin"],
        at(ended),
    )
    status, doc = await get(client, api_key, "/v1/customers/c-fin/usage")
    assert status == 200, doc
    assert (doc["status"], doc["final_invoice"]) == ("canceled", True)
    [item] = doc["items"]
    assert item["subscription_item"] == "si_m_c-fin"
    assert item["period"] == {"start": seeded.current[0], "end": ended}
    amount = line_amount(engine_price(GRADUATED), Decimal(100))
    assert item["amount"] == amount
    assert doc["invoice"]["total"] == amount  # no licensed fee, no next period
