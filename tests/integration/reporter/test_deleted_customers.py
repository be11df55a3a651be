"""Usage of a deleted Stripe customer's subscription belongs to that customer: deleting it
"immediately cancels any active subscriptions on the customer" (docs.stripe.com/api/customers/
delete) with no final invoice, so nothing bills that usage any more. It is recorded, never sent
to the customer that took our external id over when the customer came back."""

from __future__ import annotations

import asyncpg
import pytest
import stripe
from redis.asyncio import Redis

from aggregator.attribution import ItemPeriod
from aggregator.windows import HOUR_MS
from meter import wiring
from meter.config import Settings
from meter.stripe_emulator.server import RunningEmulator
from reporter.plan import CUSTOMER_DELETED_USAGE
from reporter.worker import Reporter
from tests.integration.aggregator.conftest import Client

from .conftest import ingest_and_aggregate, now_ms, seed_invoice, stream_identifiers
from .test_periods import _event, _one_item_world

EXTERNAL = "acct-42"


async def _world(
    sdk: stripe.StripeClient, db: asyncpg.Connection, *, deleted: bool, returned: bool
) -> tuple[object, str, str]:
    """Our customer EXTERNAL, first held by the subscription's Stripe customer (deleted or
    not), then (with `returned`) by a new one; its usage is in the old item's open period."""
    boundary = now_ms() + 24 * HOUR_MS
    world, old, _, open_period, _ = await _one_item_world(sdk, db, boundary)
    world.attributor.periods = [ItemPeriod(EXTERNAL, "calls", "si_calls", open_period)]
    await db.execute(
        "INSERT INTO customers (stripe_id, tenant, external_id, deleted, event_created)"
        " VALUES ($1, 'acme', $2, $3, 1)",
        old,
        EXTERNAL,
        deleted,
    )
    new = (await sdk.v1.customers.create_async({"email": "back@example.com"})).id
    if returned:
        await db.execute(
            "INSERT INTO customers (stripe_id, tenant, external_id, deleted, event_created)"
            " VALUES ($1, 'acme', $2, false, 2)",
            new,
            EXTERNAL,
        )
    return world, old, new


@pytest.mark.parametrize("returned", [True, False], ids=["returned", "gone"])
async def test_a_deleted_customers_usage_is_recorded_not_sent_to_the_returning_one(
    returned: bool,
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    """Whether a new customer holds our id now (without the rule its usage went there) or
    none does (without the rule it waited for one)."""
    world, old, _ = await _world(sdk, db, deleted=True, returned=returned)
    event = _event(EXTERNAL, "a", 5, now_ms() - HOUR_MS)
    await ingest_and_aggregate(client, api_key, redis, settings, world, [event])
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
    assert await stream_identifiers(emu) == []
    rows = await db.fetch("SELECT stripe_customer, status, last_error FROM report_outbox")
    assert [tuple(r) for r in rows] == [(old, "late", CUSTOMER_DELETED_USAGE)]


async def test_a_live_customers_usage_is_sent_to_it(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    world, old, _ = await _world(sdk, db, deleted=False, returned=False)
    event = _event(EXTERNAL, "a", 5, now_ms() - HOUR_MS)
    await ingest_and_aggregate(client, api_key, redis, settings, world, [event])
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
    rows = await db.fetch("SELECT stripe_customer, status FROM report_outbox")
    assert [tuple(r) for r in rows] == [(old, "sent")]


async def test_a_waiting_row_of_a_customer_deleted_since_is_recorded_not_left_waiting(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    """Late usage of a finalized period waits for the item's next period; the customer is
    deleted before one is known (its subscription ended): no period will ever take the row."""
    boundary = (now_ms() - 10 * 60_000) // 60_000 * 60_000
    world, customer, sub, ended, _ = await _one_item_world(sdk, db, boundary, next_known=False)
    await db.execute(
        "INSERT INTO customers (stripe_id, tenant, external_id, deleted, event_created)"
        " VALUES ($1, 'acme', $2, false, 1) ON CONFLICT (stripe_id) DO NOTHING",
        customer,
        customer,
    )
    await seed_invoice(db, customer, sub, ended)
    rsettings = rsettings.replace(reporter_invoice_grace_s=45 * 60.0)
    event = _event(customer, "a", 5, boundary - 60_000)
    await ingest_and_aggregate(client, api_key, redis, settings, world, [event])
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
        assert await db.fetchval("SELECT status FROM report_outbox") == "waiting"
        await db.execute("UPDATE customers SET deleted = true WHERE stripe_id = $1", customer)
        await reporter.once()
    assert await stream_identifiers(emu) == []
    rows = await db.fetch("SELECT status, last_error FROM report_outbox")
    assert [tuple(r) for r in rows] == [("late", CUSTOMER_DELETED_USAGE)]
