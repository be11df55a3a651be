"""A deactivated Stripe meter accepts no meter events ("When a meter is deactivated, no more meter
events will be accepted for this meter", https://docs.stripe.com/api/billing/meter/deactivate):
Stripe answers 200 and reports them later as `archived_meter`. Usage for it waits, counted, in
the rollups and in the outbox, and is sent once the meter is reactivated ("events for this meter
can be accepted", https://docs.stripe.com/api/billing/meter/reactivate)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import asyncpg
import stripe

from aggregator.windows import HOUR_MS
from meter import wiring
from meter.billing import store
from meter.config import Settings
from meter.stripe_emulator.server import RunningEmulator
from reporter.worker import Reporter
from tests.integration.aggregator.conftest import Client

from .conftest import control, ingest_and_aggregate, make_world, now_ms


async def _sync_meter(db: asyncpg.Connection, sdk: stripe.StripeClient, meter_id: str) -> None:
    """Store the Stripe meter as its webhook (billing.meter.*) does."""
    meter = (await sdk.v1.billing.meters.retrieve_async(meter_id)).to_dict()

    async def same(kind: str, id_: str) -> Any:
        return meter

    async with db.transaction():
        await store.apply_meter(db, meter, int(time.time()), same, "default")


async def _total(emu: RunningEmulator, meter_id: str, customer: str) -> Decimal:
    doc = await control(emu, "GET", f"/meters/{meter_id}/totals")
    return Decimal(str(doc["totals"].get(customer, 0)))


def _events(customer: str, tag: str) -> list[dict[str, Any]]:
    # One hourly bucket whatever the clock says: a minute into the hour before now's.
    hour = (now_ms() // HOUR_MS - 1) * HOUR_MS
    at = (hour + 60_000) / 1000
    return [
        {"id": f"{tag}{i}", "customer": customer, "meter": "calls", "value": 3, "timestamp": at + i}
        for i in range(4)
    ]


def _waiting(reporter: Reporter) -> float:
    return float(reporter.metrics.waiting_meter._value.get())  # type: ignore[attr-defined]


async def test_usage_of_an_inactive_meter_waits_and_is_sent_on_reactivation(
    client: Client,
    api_key: str,
    redis: Any,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    world = await make_world(sdk, db, n_customers=1, meters={"calls": "sum"})
    cus, meter = world.customers[0], world.meter_ids["calls"]
    await sdk.v1.billing.meters.deactivate_async(meter)
    await _sync_meter(db, sdk, meter)
    await ingest_and_aggregate(client, api_key, redis, settings, world, _events(cus, "a"))
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
        # Nothing was sent into the inactive meter (Stripe would drop it); the usage waits.
        assert (await control(emu, "GET", "/meter_events"))["rejected"] == []
        assert _waiting(reporter) == 1
        await sdk.v1.billing.meters.reactivate_async(meter)
        await _sync_meter(db, sdk, meter)
        await reporter.once()
        assert await _total(emu, meter, cus) == 12
        assert _waiting(reporter) == 0


async def test_pending_rows_are_held_while_their_meter_is_inactive(
    client: Client,
    api_key: str,
    redis: Any,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    world = await make_world(sdk, db, n_customers=1, meters={"calls": "sum"})
    cus, meter = world.customers[0], world.meter_ids["calls"]
    await _sync_meter(db, sdk, meter)
    await ingest_and_aggregate(client, api_key, redis, settings, world, _events(cus, "b"))
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        built = await reporter.build()
        assert built.rows == 1
        # Deactivated after the rows were planned: the sender holds them.
        await sdk.v1.billing.meters.deactivate_async(meter)
        await _sync_meter(db, sdk, meter)
        assert await reporter.send_due() == 0
        assert await reporter.pending() == 0  # held rows are not due: `once` does not spin
        await reporter.build()
        assert _waiting(reporter) == 1
        assert reporter.metrics.outbox_depth._value.get() == 0  # type: ignore[attr-defined]
        assert (await control(emu, "GET", "/meter_events"))["rejected"] == []
        assert await db.fetchval("SELECT count(*) FROM report_outbox WHERE status = 'pending'") == 1

        await sdk.v1.billing.meters.reactivate_async(meter)
        await _sync_meter(db, sdk, meter)
        await reporter.once()
        assert await _total(emu, meter, cus) == 12
        assert _waiting(reporter) == 0
