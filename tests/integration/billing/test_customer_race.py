"""Our API and Stripe's `customer.created` webhook store the same new customer at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from meter.billing import convert, store
from meter.billing.gateway import Obj

ROUNDS = 100


async def _apply(conn: asyncpg.Connection, obj: Obj) -> None:
    async def stripes_copy(kind: str, id_: str) -> Obj | None:
        return obj  # what the second writer asks Stripe on a tie: the same customer

    async with conn.transaction():
        await store.apply_customer(conn, obj, int(obj["created"]), stripes_copy, "acme")


async def _link(conn: asyncpg.Connection, obj: Obj) -> None:
    async with conn.transaction():
        await store.link_customer(conn, obj["id"], "acme", obj["metadata"][convert.META_CUSTOMER])


@pytest.mark.parametrize("second", [_apply, _link])
async def test_two_writers_of_one_new_customer_both_succeed(
    database_url: str, second: Callable[[asyncpg.Connection, Obj], Awaitable[None]]
) -> None:
    """Each round two connections store the same new customer concurrently, as checkout and
    the webhooks (`customer.created`, a completed checkout's link) do. Postgres's ON CONFLICT
    resolves only its arbiter (the Stripe id): a concurrent insert could fail on the second
    unique index, one live customer per external id, and checkout answered 500. Every write
    must succeed and leave one row per customer."""
    a, b = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        for n in range(ROUNDS):
            obj: Obj = {
                "id": f"cus_race{n}",
                "object": "customer",
                "created": 1_795_000_000,
                "metadata": {convert.META_CUSTOMER: f"race-{n}", convert.META_TENANT: "acme"},
            }
            await asyncio.gather(_apply(a, obj), second(b, obj))
        rows = await a.fetch(
            "SELECT stripe_id, external_id FROM customers WHERE stripe_id LIKE 'cus_race%'"
        )
        assert sorted((r["stripe_id"], r["external_id"]) for r in rows) == sorted(
            (f"cus_race{n}", f"race-{n}") for n in range(ROUNDS)
        )
    finally:
        await a.close()
        await b.close()
