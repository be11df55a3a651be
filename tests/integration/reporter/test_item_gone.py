"""Late usage of an item that bills its meter no more: deleted from its subscription, or its
price replaced by one on another meter. A meter event names a customer and a meter, never an item
(https://docs.stripe.com/api/billing/meter-event/create), and Stripe bills the usage of the price
taken off at once (flexible mode) or not at all (classic mode; docs.stripe.com/billing/
subscriptions/usage-based/manage-billing-setup, "Update prices mid-cycle"). While the cycle's
invoice is a draft the usage is sent at its own time; once that invoice is final no period of
the item will ever bill the meter, so the usage is recorded `late` with its reason: never
carried onto another meter's price, never left waiting forever, never sent."""

from __future__ import annotations

import asyncpg
import stripe
from redis.asyncio import Redis

from aggregator.attribution import ItemPeriod
from aggregator.windows import HOUR_MS, Window
from meter import wiring
from meter.config import Settings
from meter.stripe_emulator.server import RunningEmulator
from reporter.plan import ITEM_GONE
from reporter.worker import Reporter
from tests.integration.aggregator.conftest import Client

from .conftest import (
    ingest_and_aggregate,
    make_world,
    now_ms,
    seed_billing,
    seed_invoice,
    stream_identifiers,
    stripe_totals,
    utc,
)


async def _billing_meter(db: asyncpg.Connection, meter_id: str, name: str) -> None:
    await db.execute(
        "INSERT INTO billing_meters (id, event_name, formula, customer_key, value_key, status,"
        " event_created) VALUES ($1, $2, 'sum', 'stripe_customer_id', 'value', 'active', 0)",
        meter_id,
        name,
    )


async def _late_is_recorded(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    *,
    replaced: bool,
) -> None:
    ended = (now_ms() - 10 * 60_000) // 60_000 * 60_000  # inside the grace period
    cycle = Window(ended - 5 * 24 * HOUR_MS, ended + 25 * 24 * HOUR_MS)
    world = await make_world(
        emu.client(), db, n_customers=1, meters={"calls": "sum", "jobs": "sum"}
    )
    customer = world.customers[0]
    old = Window(cycle.start_ms, ended)  # the item's window on `calls`, ended early
    world.attributor.periods = [ItemPeriod(customer, "calls", "si_x", old)]
    windows = [old, Window(ended, cycle.end_ms)] if replaced else [old]
    sub = await seed_billing(db, customer, {"si_x": windows})
    for name in ("calls", "jobs"):
        await _billing_meter(db, world.meter_ids[name], name)
    await db.execute(
        "UPDATE subscription_item_periods SET meter = $2 WHERE item = 'si_x' AND period_start = $1",
        utc(old.start_ms),
        world.meter_ids["calls"],
    )
    if replaced:  # the item's price is on `jobs` from `ended` on
        await db.execute(
            "UPDATE subscription_item_periods SET meter = $2"
            " WHERE item = 'si_x' AND period_start = $1",
            utc(ended),
            world.meter_ids["jobs"],
        )
    else:  # the item was deleted at `ended`
        await db.execute(
            "UPDATE subscription_items SET removed_at = $1 WHERE id = 'si_x'", utc(ended)
        )

    def event(id_: str, value: int) -> dict[str, object]:
        at = ended - HOUR_MS
        return {"id": id_, "customer": customer, "meter": "calls", "value": value,
                "timestamp": at / 1000}  # fmt: skip

    await ingest_and_aggregate(client, api_key, redis, settings, world, [event("a", 4)])
    async with Reporter(
        rsettings.replace(reporter_invoice_grace_s=45 * 60.0), directory=wiring.customer_directory()
    ) as reporter:
        # The cycle's invoice is a draft: the usage is sent, timestamped in its own window.
        await reporter.once()
        assert (await stripe_totals(emu, world))[(customer, "calls")] == 4
        # Finalized: the cycle's invoice covers the item's window, which ended before it.
        await seed_invoice(db, customer, sub, cycle, status="open")
        sent = await stream_identifiers(emu)
        await ingest_and_aggregate(client, api_key, redis, settings, world, [event("b", 6)])
        await reporter.once()
        await reporter.once()
    assert await stream_identifiers(emu) == sent  # neither carried onto `jobs` nor sent
    rows = await db.fetch("SELECT status, last_error, value FROM report_outbox WHERE value = 6")
    assert [(r["status"], r["last_error"]) for r in rows] == [("late", ITEM_GONE)]
    assert (await stripe_totals(emu, world))[(customer, "calls")] == 4


async def test_late_usage_of_a_deleted_item_is_recorded_not_left_waiting(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    await _late_is_recorded(client, api_key, redis, settings, rsettings, db, emu, replaced=False)


async def test_late_usage_of_a_price_replaced_onto_another_meter_is_not_carried_onto_it(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    await _late_is_recorded(client, api_key, redis, settings, rsettings, db, emu, replaced=True)
