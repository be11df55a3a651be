"""Versions of a max/last period that would share a second, through the emulator.

Stripe's `last` keeps the latest event's value and does not document which of two events of one
second wins; the emulator keeps the first received (its README says why). The reporter must end
at the period's value all the same.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import stripe
from redis.asyncio import Redis

from aggregator.attribution import ItemPeriod
from aggregator.windows import HOUR_MS, Window
from meter import wiring
from meter.config import Settings
from meter.stripe_emulator.server import RunningEmulator
from reporter.plan import NO_SECOND_LEFT
from reporter.worker import Reporter
from tests.integration.aggregator.conftest import Client

from .conftest import ingest_and_aggregate, make_world, now_ms, seed_billing, stripe_totals


async def test_absolute_versions_of_one_second_end_at_the_periods_value(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    world = await make_world(sdk, db, n_customers=1, meters={"peak": "max", "gauge": "last"})
    customer = world.customers[0]
    period = world.attributor.periods[0].period
    await seed_billing(db, customer, {p.item: [period] for p in world.attributor.periods})
    t = (now_ms() - HOUR_MS) // 1000 * 1000 + 200  # 200 ms into a second, an hour ago
    first = [
        {"id": "p1", "customer": customer, "meter": "peak", "value": 5, "timestamp": t / 1000},
        {"id": "g1", "customer": customer, "meter": "gauge", "value": 3, "timestamp": t / 1000},
    ]
    # A bigger peak that happened earlier (the period's latest event time stays), and a newer
    # gauge reading in the same second: both new versions' own times fall in that second.
    second = [
        {"id": "p2", "customer": customer, "meter": "peak", "value": 9, "timestamp": t / 1000 - 10},
        {
            "id": "g2",
            "customer": customer,
            "meter": "gauge",
            "value": 7,
            "timestamp": (t + 500) / 1000,
        },
    ]
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await ingest_and_aggregate(client, api_key, redis, settings, world, first)
        await reporter.once()
        await ingest_and_aggregate(client, api_key, redis, settings, world, second)
        await reporter.once()
    totals = await stripe_totals(emu, world)
    assert totals == {(customer, "peak"): Decimal(9), (customer, "gauge"): Decimal(7)}
    times = await db.fetch(
        "SELECT meter, array_agg(event_time ORDER BY id) AS at FROM report_outbox GROUP BY meter"
    )
    for r in times:
        assert [int(x.timestamp()) for x in r["at"]] == [t // 1000, t // 1000 + 1], r["meter"]


async def test_a_version_with_no_second_left_in_its_period_is_recorded_not_sent(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    """In the finalization grace: the period's last second already holds a version; a later
    version cannot follow it, so it is recorded `late` with its reason, counted and logged."""
    end = (now_ms() - 5 * 60_000) // 60_000 * 60_000
    world = await make_world(sdk, db, n_customers=1, meters={"peak": "max"})
    customer = world.customers[0]
    ended = Window(end - 10 * 24 * HOUR_MS, end)
    current = Window(end, end + 20 * 24 * HOUR_MS)
    world.attributor.periods = [ItemPeriod(customer, "peak", "si_p", w) for w in (ended, current)]
    await seed_billing(db, customer, {"si_p": [ended, current]})
    peak = {"customer": customer, "meter": "peak"}
    async with Reporter(
        rsettings.replace(reporter_invoice_grace_s=45 * 60.0), directory=wiring.customer_directory()
    ) as reporter:
        await ingest_and_aggregate(
            client,
            api_key,
            redis,
            settings,
            world,
            [{**peak, "id": "p1", "value": 5, "timestamp": (end - 300) / 1000}],
        )
        await reporter.once()
        await ingest_and_aggregate(
            client,
            api_key,
            redis,
            settings,
            world,
            [{**peak, "id": "p2", "value": 9, "timestamp": (end - 700) / 1000}],
        )
        await reporter.once()
        assert reporter.metrics.held.labels("recorded")._value.get() == 1
    rows = await db.fetch("SELECT value, status, last_error FROM report_outbox ORDER BY id")
    assert [(r["value"], r["status"], r["last_error"]) for r in rows] == [
        (5, "sent", None),
        (9, "late", NO_SECOND_LEFT),
    ]
    assert await stripe_totals(emu, world) == {(customer, "peak"): Decimal(5)}
