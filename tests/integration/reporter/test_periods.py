"""Past Stripe's dedupe horizon, and usage arriving after its period's invoice was finalized."""

from __future__ import annotations

import asyncpg
import stripe
from redis.asyncio import Redis

from aggregator.attribution import ItemPeriod
from aggregator.windows import HOUR_MS, Window
from meter.config import Settings
from meter.stripe_emulator.server import RunningEmulator
from reporter.worker import Reporter
from tests.integration.aggregator.conftest import Client

from .conftest import (
    close,
    control,
    expected_totals,
    ingest_and_aggregate,
    make_events,
    make_world,
    now_ms,
    stream_identifiers,
    stripe_totals,
)

AGED = "UPDATE report_outbox SET created_at = now() - interval '21 hours'"


async def test_rows_past_the_horizon_are_checked_before_any_resend(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    world = await make_world(sdk, db, meters={"calls": "sum", "requests": "count"})
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, make_events(world, 150, seed=9)
    )
    async with Reporter(rsettings.replace(reporter_concurrency=1)) as reporter:
        await reporter.once()
        # Applied in Stripe, but our mark was lost, 21 h ago: settled by event_summaries.
        applied = await db.fetch(
            AGED + ", status = 'pending', sent_at = NULL WHERE meter = 'calls' RETURNING identifier"
        )
        assert applied
        await control(emu, "DELETE", "/requests")
        await reporter.once()
        assert await stream_identifiers(emu) == []
        assert reporter.metrics.horizon_checks.labels("applied")._value.get() > 0
        assert await db.fetchval("SELECT count(*) FROM report_outbox WHERE status <> 'sent'") == 0

        # Never sent, 21 h old: event_summaries show it missing, so it is sent.
        await ingest_and_aggregate(
            client, api_key, redis, settings, world, make_events(world, 60, seed=10, hours=2)
        )
        await reporter.build()
        missing = await db.fetch(AGED + " WHERE status = 'pending' RETURNING identifier")
        assert missing
        await reporter.once()
        assert sorted(await stream_identifiers(emu)) == sorted(r[0] for r in missing)
        assert reporter.metrics.horizon_checks.labels("missing")._value.get() > 0
    assert close(await stripe_totals(emu, world), await expected_totals(db))


async def test_late_usage_after_finalization_is_carried_never_dropped(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    world = await make_world(sdk, db, n_customers=1, meters={"calls": "sum", "gauge": "last"})
    customer = world.customers[0]
    boundary = (now_ms() - 3 * HOUR_MS) // 60_000 * 60_000
    world.attributor.periods = [
        ItemPeriod(customer, meter, f"si_{meter}", window)
        for meter in ("calls", "gauge")
        for window in (
            Window(boundary - 10 * 24 * HOUR_MS, boundary),
            Window(boundary, boundary + 27 * 24 * HOUR_MS),
        )
    ]

    def event(id_: str, meter: str, value: float, at_ms: int) -> dict[str, object]:
        return {
            "id": id_,
            "customer": customer,
            "meter": meter,
            "value": value,
            "timestamp": at_ms / 1000,
        }

    old, new = boundary - 2 * HOUR_MS, boundary + HOUR_MS
    # The old period's usage, reported while nothing shows its period has ended.
    await ingest_and_aggregate(
        client,
        api_key,
        redis,
        settings,
        world,
        [event("a", "calls", 5, old), event("c", "gauge", 3, old)],
    )
    async with Reporter(rsettings) as reporter:
        await reporter.once()
        assert reporter.metrics.late.labels("carried")._value.get() == 0
        # The new period's usage, and late usage of the old one, whose invoice is final now
        # (it ended 3 h ago; grace 60 s).
        await ingest_and_aggregate(
            client,
            api_key,
            redis,
            settings,
            world,
            [
                event("b", "calls", 7, new),
                event("d", "gauge", 9, new),
                event("e", "calls", 11, old + 60_000),
                event("f", "gauge", 4, old + 60_000),
            ],
        )
        await reporter.once()
        assert reporter.metrics.late.labels("carried")._value.get() == 1
        assert reporter.metrics.late.labels("recorded")._value.get() == 1
    carried = await db.fetchrow(
        "SELECT value, event_time, carried_from, status FROM report_outbox"
        " WHERE carried_from IS NOT NULL"
    )
    assert carried is not None
    assert carried["value"] == 11
    assert carried["status"] == "sent"
    assert carried["event_time"].timestamp() * 1000 > boundary  # in the current period
    assert carried["carried_from"].timestamp() * 1000 < boundary
    late = await db.fetchrow("SELECT value FROM report_outbox WHERE status = 'late'")
    assert late is not None
    assert late["value"] == 4
    # Nothing lost: Stripe holds all 23 calls, and the gauge of the current period.
    totals = await stripe_totals(emu, world)
    assert totals[(customer, "calls")] == 23
    assert totals[(customer, "gauge")] == 9
