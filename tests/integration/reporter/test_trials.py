"""Usage of a trial period is charged by no Stripe invoice ("during the trial period, any usage
accrued doesn't count toward the total charged", docs.stripe.com/billing/subscriptions/trials):
once the trial period is closed, its usage is recorded, never carried into a paid period."""

from __future__ import annotations

import asyncpg
import stripe
from redis.asyncio import Redis

from aggregator.windows import HOUR_MS
from meter import wiring
from meter.config import Settings
from meter.stripe_emulator.server import RunningEmulator
from reporter.plan import TRIAL_USAGE
from reporter.worker import Reporter
from tests.integration.aggregator.conftest import Client

from .conftest import (
    ingest_and_aggregate,
    now_ms,
    seed_invoice,
    stream_identifiers,
    stripe_totals,
    utc,
)
from .test_periods import _event, _one_item_world


async def _trial(db: asyncpg.Connection, sub: str, start_ms: int, end_ms: int) -> None:
    await db.execute(
        "UPDATE subscriptions SET trial_start = $2, trial_end = $3 WHERE id = $1",
        sub,
        utc(start_ms),
        utc(end_ms),
    )


async def test_usage_of_a_closed_trial_is_recorded_never_carried(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    """Two paths: a row planned while the trial was open and still unsent when its invoice was
    finalized (the sender), and usage that arrives after that (the build). Neither is sent."""
    boundary = (now_ms() - 10 * 60_000) // 60_000 * 60_000
    world, customer, sub, trial, _ = await _one_item_world(sdk, db, boundary)
    await _trial(db, sub, trial.start_ms, trial.end_ms)
    rsettings = rsettings.replace(reporter_invoice_grace_s=45 * 60.0)
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, [_event(customer, "a", 5, boundary - HOUR_MS)]
    )
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await reporter.build()  # planned while the trial period is open
        await seed_invoice(db, customer, sub, trial, status="paid")
        await reporter.once()
        await ingest_and_aggregate(
            client,
            api_key,
            redis,
            settings,
            world,
            [_event(customer, "b", 7, boundary - 2 * HOUR_MS)],
        )
        await reporter.once()
        late = {
            a: reporter.metrics.late.labels(a)._value.get() for a in ("trial", "moved", "carried")
        }
    assert await stream_identifiers(emu) == []
    assert (await stripe_totals(emu, world)).get((customer, "calls"), 0) == 0
    assert late == {"trial": 2, "moved": 0, "carried": 0}
    rows = await db.fetch("SELECT value, status, last_error, carried_from FROM report_outbox")
    assert sorted((r["value"], r["status"], r["last_error"], r["carried_from"]) for r in rows) == [
        (5, "late", TRIAL_USAGE, None),
        (7, "late", TRIAL_USAGE, None),
    ]


async def test_usage_of_an_open_trial_is_sent(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    """While the trial lasts its usage is sent like any: Stripe counts it and charges 0."""
    boundary = now_ms() + 24 * HOUR_MS
    world, customer, sub, trial, _ = await _one_item_world(sdk, db, boundary)
    await _trial(db, sub, trial.start_ms, trial.end_ms)
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, [_event(customer, "a", 5, now_ms() - HOUR_MS)]
    )
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
    assert (await stripe_totals(emu, world))[(customer, "calls")] == 5
    assert await db.fetchval("SELECT status FROM report_outbox") == "sent"
