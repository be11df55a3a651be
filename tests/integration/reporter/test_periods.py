"""Past Stripe's dedupe horizon, and usage arriving after its period's invoice was finalized."""

from __future__ import annotations

from typing import Any

import asyncpg
import stripe
from redis.asyncio import Redis

from aggregator.attribution import ItemPeriod
from aggregator.windows import HOUR_MS, Window
from meter import wiring
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
    seed_billing,
    seed_invoice,
    stream_identifiers,
    stripe_totals,
    utc,
)

STREAM = "/v2/billing/meter_event_stream"
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
    async with Reporter(
        rsettings.replace(reporter_concurrency=1), directory=wiring.customer_directory()
    ) as reporter:
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


async def test_a_fresh_row_sharing_a_minute_with_an_old_applied_row_is_sent_once(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    """Two versions of one bucket share its minute: the first applied in Stripe 21 h ago but
    its mark lost, the second new. The new one is sent (exactly once) and the old one settled
    as applied, not both parked in `review`."""
    world = await make_world(sdk, db, n_customers=1, meters={"calls": "sum"})
    customer = world.customers[0]
    at = now_ms() - HOUR_MS
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, [_event(customer, "a", 5, at)]
    )
    async with Reporter(
        rsettings.replace(reporter_concurrency=1), directory=wiring.customer_directory()
    ) as reporter:
        await reporter.once()
        await db.execute(AGED + ", status = 'pending', sent_at = NULL")
        await ingest_and_aggregate(
            client, api_key, redis, settings, world, [_event(customer, "b", 7, at + 1000)]
        )
        await reporter.build()
        fresh = await db.fetchval(
            "SELECT identifier FROM report_outbox WHERE created_at > now() - interval '1 hour'"
        )
        minutes = await db.fetchval(
            "SELECT count(DISTINCT date_trunc('minute', event_time)) FROM report_outbox"
        )
        assert minutes == 1
        await control(emu, "DELETE", "/requests")
        await reporter.once()
        assert reporter.metrics.horizon_checks.labels("applied")._value.get() == 1
    assert await stream_identifiers(emu) == [fresh]
    statuses = await db.fetch("SELECT status FROM report_outbox")
    assert [r["status"] for r in statuses] == ["sent", "sent"]
    assert (await stripe_totals(emu, world))[(customer, "calls")] == 12


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
    windows = (
        Window(boundary - 10 * 24 * HOUR_MS, boundary),
        Window(boundary, boundary + 27 * 24 * HOUR_MS),
    )
    world.attributor.periods = [
        ItemPeriod(customer, meter, f"si_{meter}", window)
        for meter in ("calls", "gauge")
        for window in windows
    ]
    await seed_billing(db, customer, {f"si_{meter}": windows for meter in ("calls", "gauge")})

    def event(id_: str, meter: str, value: float, at_ms: int) -> dict[str, object]:
        return {
            "id": id_,
            "customer": customer,
            "meter": meter,
            "value": value,
            "timestamp": at_ms / 1000,
        }

    old, new = boundary - 2 * HOUR_MS, boundary + HOUR_MS
    # The old period's usage, reported while its invoice may still take usage (a 4 h grace).
    await ingest_and_aggregate(
        client,
        api_key,
        redis,
        settings,
        world,
        [event("a", "calls", 5, old), event("c", "gauge", 3, old)],
    )
    async with Reporter(
        rsettings.replace(reporter_invoice_grace_s=4 * 3600.0),
        directory=wiring.customer_directory(),
    ) as reporter:
        await reporter.once()
        assert reporter.metrics.late.labels("carried")._value.get() == 0
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
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
    assert carried["event_time"].timestamp() * 1000 == boundary  # the current period's start
    assert carried["carried_from"].timestamp() * 1000 < boundary
    late = await db.fetchrow("SELECT value FROM report_outbox WHERE status = 'late'")
    assert late is not None
    assert late["value"] == 4
    # Nothing lost: Stripe holds all 23 calls, and the gauge of the current period.
    totals = await stripe_totals(emu, world)
    assert totals[(customer, "calls")] == 23
    assert totals[(customer, "gauge")] == 9


def _event(customer: str, id_: str, value: float, at_ms: int) -> dict[str, object]:
    return {
        "id": id_,
        "customer": customer,
        "meter": "calls",
        "value": value,
        "timestamp": at_ms / 1000,
    }


async def _one_item_world(
    sdk: stripe.StripeClient, db: asyncpg.Connection, boundary: int, *, next_known: bool = True
) -> tuple[Any, str, str, Window, Window]:
    """One customer, one `calls` item whose period changed at `boundary`; billing knows the
    ended period and (with `next_known`) the new one."""
    world = await make_world(sdk, db, n_customers=1, meters={"calls": "sum"})
    customer = world.customers[0]
    ended = Window(boundary - 10 * 24 * HOUR_MS, boundary)
    current = Window(boundary, boundary + 27 * 24 * HOUR_MS)
    world.attributor.periods = [
        ItemPeriod(customer, "calls", "si_calls", w) for w in (ended, current)
    ]
    sub = await seed_billing(
        db, customer, {"si_calls": [ended, current] if next_known else [ended]}
    )
    return world, customer, sub, ended, current


async def test_late_usage_of_an_invoiced_period_is_carried_without_usage_in_the_new_one(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    """The period ended 10 minutes ago (inside the grace); its invoice is final (webhook). Late
    usage of it is carried into the new period although the customer has no usage there."""
    boundary = (now_ms() - 10 * 60_000) // 60_000 * 60_000
    world, customer, sub, ended, _ = await _one_item_world(sdk, db, boundary)
    rsettings = rsettings.replace(reporter_invoice_grace_s=45 * 60.0)
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, [_event(customer, "a", 5, boundary - HOUR_MS)]
    )
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()  # open (in its grace): sent with its own timestamp
        await seed_invoice(db, customer, sub, ended)
        await ingest_and_aggregate(
            client, api_key, redis, settings, world, [_event(customer, "b", 7, boundary - 60_000)]
        )
        await reporter.once()
        assert reporter.metrics.late.labels("carried")._value.get() == 1
    rows = await db.fetch(
        "SELECT value, event_time, carried_from, status FROM report_outbox ORDER BY id"
    )
    assert [(r["value"], r["status"]) for r in rows] == [(5, "sent"), (7, "sent")]
    assert rows[0]["carried_from"] is None
    assert rows[1]["event_time"] == utc(boundary)  # billed by the open period's invoice
    assert utc(ended.start_ms) <= rows[1]["carried_from"] < utc(boundary)  # its bucket's time
    assert (await stripe_totals(emu, world))[(customer, "calls")] == 12


async def test_late_usage_waits_for_an_open_period_then_is_carried(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    """Ended 3 h ago (past the grace), and billing knows no later period yet: the late usage
    waits in the outbox (counted), never sent into the invoiced period, never dropped."""
    boundary = (now_ms() - 3 * HOUR_MS) // 60_000 * 60_000
    world, customer, _, _, current = await _one_item_world(sdk, db, boundary, next_known=False)
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, [_event(customer, "a", 4, boundary - HOUR_MS)]
    )
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
        assert await stream_identifiers(emu) == []
        assert reporter.metrics.waiting_period._value.get() == 1
        assert await db.fetchval("SELECT status FROM report_outbox") == "waiting"
        await seed_billing(db, customer, {"si_calls": [current]})  # the next period is synced
        await reporter.once()
        assert reporter.metrics.waiting_period._value.get() == 0
    row = await db.fetchrow("SELECT event_time, carried_from, status FROM report_outbox")
    assert row is not None
    assert (row["status"], row["event_time"]) == ("sent", utc(boundary))
    assert utc(boundary - 2 * HOUR_MS) <= row["carried_from"] < utc(boundary)
    assert (await stripe_totals(emu, world))[(customer, "calls")] == 4


async def test_a_row_whose_period_was_invoiced_before_it_was_sent_is_moved_once(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    """Planned while its period was open; its first try applied but unanswered; the invoice
    became final before the retry. The retry is moved into the open period with the same
    identifier, so Stripe counts it once (its first try, taken before finalization)."""
    boundary = (now_ms() - 10 * 60_000) // 60_000 * 60_000
    world, customer, sub, ended, _ = await _one_item_world(sdk, db, boundary)
    rsettings = rsettings.replace(
        reporter_invoice_grace_s=45 * 60.0,
        reporter_max_attempts=1,
        reporter_backoff_base_s=30.0,
        reporter_backoff_cap_s=30.0,
    )
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, [_event(customer, "a", 5, boundary - HOUR_MS)]
    )
    await control(emu, "POST", "/faults", {"path": STREAM, "mode": "drop", "count": 1})
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await reporter.build()
        await reporter.send_due()
        row = await db.fetchrow("SELECT identifier, status, attempts FROM report_outbox")
        assert row is not None
        assert (row["status"], row["attempts"]) == ("pending", 1)
        assert (await stripe_totals(emu, world))[(customer, "calls")] == 5  # applied
        await seed_invoice(db, customer, sub, ended)
        await db.execute("UPDATE report_outbox SET next_attempt_at = now()")
        await control(emu, "DELETE", "/requests")
        await reporter.once()
        assert reporter.metrics.late.labels("moved")._value.get() == 1
    assert await stream_identifiers(emu) == [row["identifier"]]  # resent, same identifier
    moved = await db.fetchrow("SELECT event_time, carried_from, status FROM report_outbox")
    assert moved is not None
    assert (moved["status"], moved["event_time"]) == ("sent", utc(boundary))
    assert utc(boundary - 2 * HOUR_MS) <= moved["carried_from"] < utc(boundary)
    assert (await stripe_totals(emu, world))[(customer, "calls")] == 5  # once


async def test_an_absolute_row_whose_period_was_invoiced_before_it_was_sent_is_recorded_late(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    """A `last` value cannot be carried (it would replace the open period's): once its period
    is invoiced it is recorded `late`, not sent into the finalized invoice."""
    boundary = (now_ms() - 10 * 60_000) // 60_000 * 60_000
    world = await make_world(sdk, db, n_customers=1, meters={"gauge": "last"})
    customer = world.customers[0]
    ended = Window(boundary - 10 * 24 * HOUR_MS, boundary)
    current = Window(boundary, boundary + 27 * 24 * HOUR_MS)
    world.attributor.periods = [ItemPeriod(customer, "gauge", "si_g", w) for w in (ended, current)]
    sub = await seed_billing(db, customer, {"si_g": [ended, current]})
    gauge = {"id": "g", "customer": customer, "meter": "gauge", "value": 3}
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, [{**gauge, "timestamp": boundary / 1000 - 600}]
    )
    async with Reporter(
        rsettings.replace(reporter_invoice_grace_s=45 * 60.0), directory=wiring.customer_directory()
    ) as reporter:
        await reporter.build()
        await seed_invoice(db, customer, sub, ended, status="paid")
        await reporter.once()
        assert reporter.metrics.late.labels("recorded")._value.get() == 1
    assert await stream_identifiers(emu) == []
    assert await db.fetchval("SELECT status FROM report_outbox") == "late"
