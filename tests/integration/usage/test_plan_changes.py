"""The plan cache against real Postgres: billing writes notify (migration 0010), every serve
process drops what they name, and a lost listener connection is noticed and replaced."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg

from meter import appkeys
from meter.usage import store
from meter.usage.plans import CHANNEL, PlanCache

from .conftest import Client, get, seed_customer, seed_plan


def cache_of(client: Client) -> PlanCache:
    return client.server.app[appkeys.USAGE_PLANS]


async def eventually(check: Callable[[], Awaitable[bool]], tries: int = 200) -> bool:
    """Poll, so that the test does not depend on how fast a notification travels. Only a
    broken invalidation leaves the plan stale for the listening TTL (minutes), far past this."""
    for _ in range(tries):
        if await check():
            return True
        await asyncio.sleep(0.025)
    return False


async def listening(client: Client) -> bool:
    return await eventually(lambda: _true(cache_of(client).listening))


async def _true(value: bool) -> bool:
    return value


async def status_of(client: Client, api_key: str, customer: str) -> object:
    status, doc = await get(client, api_key, f"/v1/customers/{customer}/usage")
    assert status == 200, doc
    return doc["status"]


async def test_a_subscription_change_reaches_a_cached_plan_at_once(
    client: Client, api_key: str, db: asyncpg.Connection
) -> None:
    await seed_plan(db)
    assert await listening(client)
    assert await status_of(client, api_key, "c-1") == "active"  # now cached, for minutes

    await db.execute("UPDATE subscriptions SET status = 'past_due' WHERE id = 'sub_c-1'")

    async def past_due() -> bool:
        return await status_of(client, api_key, "c-1") == "past_due"

    assert await eventually(past_due)


async def test_a_price_change_reaches_every_cached_plan(
    client: Client, api_key: str, db: asyncpg.Connection
) -> None:
    await seed_plan(db, "c-1")
    await seed_plan(db, "c-2")
    assert await listening(client)
    for customer in ("c-1", "c-2"):
        status, doc = await get(client, api_key, f"/v1/customers/{customer}/usage")
        assert status == 200, doc
        assert [i["quantity"] for i in doc["items"] if i["price"] == "price_flat"] == ["3"]
    await db.execute(
        "UPDATE prices SET unit_amount = 2500, unit_amount_decimal = '2500' WHERE id = 'price_flat'"
    )

    async def repriced() -> bool:
        amounts = []
        for customer in ("c-1", "c-2"):
            _, doc = await get(client, api_key, f"/v1/customers/{customer}/usage")
            amounts += [i["amount"] for i in doc["items"] if i["price"] == "price_flat"]
        return amounts == [7500, 7500]

    assert await eventually(repriced)


async def test_each_billing_table_notifies_the_customer_or_everyone(
    db: asyncpg.Connection, database_url: str
) -> None:
    await seed_plan(db)
    received: list[str] = []
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(CHANNEL, lambda *args: received.append(args[3]))
    try:
        writes = {
            "UPDATE customers SET email = 'x@y' WHERE stripe_id = 'cus_c-1'": "cus_c-1",
            "UPDATE subscriptions SET status = 'past_due' WHERE id = 'sub_c-1'": "cus_c-1",
            "UPDATE subscription_items SET quantity = 4 WHERE id = 'si_f_c-1'": "cus_c-1",
            "DELETE FROM subscription_items WHERE id = 'si_f_c-1'": "cus_c-1",
            "UPDATE prices SET active = false WHERE id = 'price_flat'": "*",
            "UPDATE billing_meters SET status = 'inactive' WHERE id = 'mtr_calls'": "*",
            "INSERT INTO meter_definitions (tenant, meter, aggregation)"
            " VALUES ('acme', 'm', 'max')": "*",
        }
        for sql, expected in writes.items():
            received.clear()
            await db.execute(sql)
            assert await eventually(lambda: _true(bool(received))), sql
            assert received == [expected], sql
        # A rolled-back write announces nothing.
        received.clear()
        async with db.transaction():
            await seed_customer(db, "c-9", "cus_c-9")
            await db.execute("SELECT pg_notify($1, 'marker')", CHANNEL)
        await db.execute("SELECT pg_notify($1, 'after')", CHANNEL)
        assert await eventually(lambda: _true("after" in received))
        assert "cus_c-9" in received  # committed: announced
        received.clear()
        try:
            async with db.transaction():
                await seed_customer(db, "c-8", "cus_c-8")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        await db.execute("SELECT pg_notify($1, 'after')", CHANNEL)
        assert await eventually(lambda: _true("after" in received))
        assert received == ["after"]
    finally:
        await listener.close()


async def test_a_lost_listener_is_replaced_and_nothing_stale_survives_it(
    client: Client, api_key: str, db: asyncpg.Connection
) -> None:
    await seed_plan(db)
    assert await listening(client)
    assert await status_of(client, api_key, "c-1") == "active"
    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )
    assert killed == 1
    assert await eventually(lambda: _true(not cache_of(client).listening))
    # A change while nobody listens is not announced to this server...
    await db.execute("UPDATE subscriptions SET status = 'past_due' WHERE id = 'sub_c-1'")
    # ...but losing the listener emptied the cache, and the reconnected one starts clean.
    assert await listening(client)
    assert await status_of(client, api_key, "c-1") == "past_due"
    await db.execute("UPDATE subscriptions SET status = 'active' WHERE id = 'sub_c-1'")

    async def active() -> bool:
        return await status_of(client, api_key, "c-1") == "active"

    assert await eventually(active)


async def test_plans_on_one_price_share_its_parsed_form_until_the_price_changes(
    db: asyncpg.Connection,
) -> None:
    await seed_plan(db, "c-a")
    await seed_plan(db, "c-b")

    def metered(plan: store.Plan) -> Any:
        [item] = [i for i in plan.items if i.meter == "calls"]
        return item.price

    a = metered(await store.load_plan(db, "acme", "c-a"))
    b = metered(await store.load_plan(db, "acme", "c-b"))
    assert a is not None
    assert a is b  # parsed once, shared
    await db.execute(
        'UPDATE prices SET tiers = \'[{"up_to": null, "unit_amount_decimal": "7"}]\''
        " WHERE id = 'price_grad'"
    )
    changed = metered(await store.load_plan(db, "acme", "c-a"))
    assert changed is not a
    assert [t.unit_amount_decimal for t in changed.tiers] == [Decimal(7)]
