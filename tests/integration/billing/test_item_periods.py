"""Which price bills an item when, inside its Stripe period (meter/billing/store.py): a price
changed mid-period starts a period at the change; an item added by a later update bills from its
`created`; one the subscription was created with (a backdated one too) from its period's start."""

from __future__ import annotations

from typing import Any

import asyncpg

from meter import wiring
from meter.billing import store
from meter.billing.gateway import Obj

START, END = 1_000_000, 1_000_000 + 30 * 86400


def _sub(created: int, items: list[tuple[str, str, int]]) -> Obj:
    return {
        "id": "sub_p",
        "customer": "cus_p",
        "status": "active",
        "currency": "usd",
        "created": created,
        "items": {
            "data": [
                {
                    "id": item,
                    "created": item_created,
                    "price": {
                        "id": price,
                        "product": "prod_p",
                        "currency": "usd",
                        "unit_amount": 2,
                        "recurring": {"interval": "month", "usage_type": "licensed"},
                    },
                    "quantity": 1,
                    "current_period_start": START,
                    "current_period_end": END,
                }
                for item, price, item_created in items
            ]
        },
    }


async def _write(db: asyncpg.Connection, sub: Obj, created: int) -> None:
    async def refetch(kind: str, id_: str) -> Obj | None:
        return sub

    async with db.transaction():
        await store.apply_subscription(db, sub, created, refetch, "acme", wiring.usage_upkeep())


async def _periods(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT item, extract(epoch FROM period_start)::bigint AS s,"
        " extract(epoch FROM period_end)::bigint AS e, price FROM subscription_item_periods"
        " ORDER BY item, period_start"
    )
    return [(r["item"], r["s"], r["e"], r["price"]) for r in rows]


async def test_periods_follow_prices_and_additions(db: asyncpg.Connection) -> None:
    # Backdated: created after its period's start; its items bill from the start all the same.
    await _write(db, _sub(START + 500, [("si_a", "price_1", START + 500)]), START + 500)
    assert await _periods(db) == [("si_a", START, END, "price_1")]
    # A price change at START + 900, and an item added then.
    later = _sub(START + 500, [("si_a", "price_2", START + 500), ("si_b", "price_1", START + 900)])
    await _write(db, later, START + 900)
    assert await _periods(db) == [
        ("si_a", START, START + 900, "price_1"),
        ("si_a", START + 900, END, "price_2"),
        ("si_b", START + 900, END, "price_1"),
    ]
    # The same state again (a redelivery, a sync) changes nothing.
    await _write(db, later, START + 950)
    assert len(await _periods(db)) == 3
