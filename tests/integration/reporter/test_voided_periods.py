"""Usage of a period whose invoice was voided is charged by no invoice: collection paused with
`void` offers the service "for free" (docs.stripe.com/billing/subscriptions/pause-payment), and a
voided invoice is final. Its usage reported later is recorded, never carried into a period that
would charge it (docs/billing.md, "Late usage")."""

from __future__ import annotations

import asyncpg
import stripe
from redis.asyncio import Redis

from aggregator.attribution import ItemPeriod
from aggregator.windows import HOUR_MS, Window
from meter import wiring
from meter.config import Settings
from meter.stripe_emulator.server import RunningEmulator
from reporter.plan import VOIDED_USAGE
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
)
from .test_periods import _event, _one_item_world


async def test_usage_of_a_voided_period_is_recorded_never_carried(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    """Two paths: a row planned while the period was open and still unsent when its invoice was
    voided (the sender), and usage that arrives after that (the build). Neither is sent."""
    boundary = (now_ms() - 10 * 60_000) // 60_000 * 60_000
    world, customer, sub, ended, _ = await _one_item_world(sdk, db, boundary)
    rsettings = rsettings.replace(reporter_invoice_grace_s=45 * 60.0)
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, [_event(customer, "a", 5, boundary - HOUR_MS)]
    )
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await reporter.build()  # planned while the period is open (in its grace)
        await seed_invoice(db, customer, sub, ended, status="void")
        await reporter.once()
        await ingest_and_aggregate(
            client, api_key, redis, settings, world, [_event(customer, "b", 7, boundary - 60_000)]
        )
        await reporter.once()
        late = {
            a: reporter.metrics.late.labels(a)._value.get() for a in ("voided", "moved", "carried")
        }
    assert await stream_identifiers(emu) == []
    assert (await stripe_totals(emu, world)).get((customer, "calls"), 0) == 0
    assert late == {"voided": 2, "moved": 0, "carried": 0}
    rows = await db.fetch("SELECT value, status, last_error, carried_from FROM report_outbox")
    assert sorted((r["value"], r["status"], r["last_error"], r["carried_from"]) for r in rows) == [
        (5, "late", VOIDED_USAGE, None),
        (7, "late", VOIDED_USAGE, None),
    ]


async def test_usage_of_a_finalized_period_is_still_carried(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    """The same late usage of a period whose invoice is open (not voided) is carried."""
    boundary = (now_ms() - 10 * 60_000) // 60_000 * 60_000
    world, customer, sub, ended, _ = await _one_item_world(sdk, db, boundary)
    rsettings = rsettings.replace(reporter_invoice_grace_s=45 * 60.0)
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await seed_invoice(db, customer, sub, ended, status="open")
        await ingest_and_aggregate(
            client, api_key, redis, settings, world, [_event(customer, "b", 7, boundary - 60_000)]
        )
        await reporter.once()
    assert (await stripe_totals(emu, world))[(customer, "calls")] == 7
    assert await db.fetchval("SELECT carried_from IS NOT NULL FROM report_outbox") is True


async def test_usage_of_a_window_ended_early_inside_a_voided_invoice_is_recorded(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    """A price change on the same meter ended the item's window early inside its cycle (classic
    mode), and the cycle's invoice, which covers both windows, was voided: late usage of the
    early window is as free as the rest of the cycle, never carried into the open period."""
    boundary = (now_ms() - 10 * 60_000) // 60_000 * 60_000
    world = await make_world(sdk, db, n_customers=1, meters={"calls": "sum"})
    customer = world.customers[0]
    cycle = Window(boundary - 24 * HOUR_MS, boundary)
    changed = boundary - 6 * HOUR_MS
    windows = [
        Window(cycle.start_ms, changed),
        Window(changed, boundary),
        Window(boundary, boundary + 27 * 24 * HOUR_MS),
    ]
    world.attributor.periods = [ItemPeriod(customer, "calls", "si_calls", w) for w in windows]
    sub = await seed_billing(db, customer, {"si_calls": windows})
    await seed_invoice(db, customer, sub, cycle, status="void")
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, [_event(customer, "a", 5, changed - HOUR_MS)]
    )
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
    assert await stream_identifiers(emu) == []
    rows = await db.fetch("SELECT value, status, last_error, carried_from FROM report_outbox")
    assert [tuple(r) for r in rows] == [(5, "late", VOIDED_USAGE, None)]
