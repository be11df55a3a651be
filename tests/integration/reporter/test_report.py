"""End to end: ingest → aggregate → report → the emulator's totals equal our rollups."""

from __future__ import annotations

import asyncpg
import stripe
from redis.asyncio import Redis

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
    stream_identifiers,
    stripe_totals,
)


async def test_end_to_end_every_aggregation_then_late_events_then_reconcile(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    world = await make_world(sdk, db, n_customers=3)
    events = make_events(world, 400, seed=1)
    # Usage waiting: a customer without a Stripe id, and one without a subscription item.
    events += [
        {"id": "w1", "customer": "acct_nostripe", "meter": "calls", "value": 5},
        {"id": "w2", "customer": "cus_unattributed", "meter": "calls", "value": 5},
    ]
    world.attributor.periods += [
        type(world.attributor.periods[0])(
            "acct_nostripe", "calls", "si_x", world.attributor.periods[0].period
        )
    ]
    await ingest_and_aggregate(client, api_key, redis, settings, world, events)

    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        sent = await reporter.once()
        assert sent > 0
        expected = await expected_totals(db)
        assert len(expected) == 3 * 5
        assert close(await stripe_totals(emu, world), expected)
        assert reporter.metrics.waiting_customer._value.get() == 1
        assert reporter.metrics.waiting_attribution._value.get() == 1
        # Nothing about waiting usage reached Stripe, and every event was sent once.
        identifiers = await stream_identifiers(emu)
        assert len(identifiers) == len(set(identifiers)) == sent
        assert (await control(emu, "GET", "/meter_events"))["rejected"] == []

        # A second pass with nothing new sends nothing.
        assert await reporter.once() == 0

        # Late events (new versions of existing buckets) → deltas / new absolute values.
        late = make_events(world, 120, seed=2, hours=3)
        late.append(
            {"id": "late-gauge", "customer": world.customers[0], "meter": "gauge", "value": 42}
        )
        await ingest_and_aggregate(client, api_key, redis, settings, world, late)
        assert await reporter.once() > 0
        expected = await expected_totals(db)
        assert expected[(world.customers[0], "gauge")] == 42
        assert close(await stripe_totals(emu, world), expected)
        identifiers = await stream_identifiers(emu)
        assert len(identifiers) == len(set(identifiers))

        # Reconciliation: no drift; then drift made on purpose in Stripe is found.
        compared, drift = await reporter.reconcile()
        assert compared >= 3 * 5
        assert drift == []
        assert reporter.metrics.drifting._value.get() == 0
        # At the time of usage we already sent, so it falls inside what reconciliation compares
        # (an arbitrary "an hour ago" can miss it, depending on the minute the test runs).
        sent_at = next(
            e["timestamp"]
            for e in (await control(emu, "GET", "/meter_events"))["data"]
            if e["customer"] == world.customers[1] and e["event_name"] == "calls"
        )
        await sdk.v1.billing.meter_events.create_async(
            {
                "event_name": "calls",
                "payload": {"stripe_customer_id": world.customers[1], "value": "3"},
                "timestamp": sent_at,
            }
        )
        _, drift = await reporter.reconcile()
        assert [(d.customer, d.meter, d.delta) for d in drift] == [(world.customers[1], "calls", 3)]
        assert reporter.metrics.drifting._value.get() == 1
