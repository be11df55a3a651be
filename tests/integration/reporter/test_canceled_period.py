"""Late usage of a subscription canceled now, whose final invoice bills [period start, cancel):
while that invoice is a draft the usage is sent at its own time and billed on it; once it is
finalized Stripe bills it nowhere (the subscription has no later period), so the reporter never
sends it into that period or any other: it waits, counted, never sent twice, never dropped."""

from __future__ import annotations

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
    ingest_and_aggregate,
    make_world,
    now_ms,
    seed_billing,
    seed_invoice,
    stream_identifiers,
    stripe_totals,
)


async def test_late_usage_of_a_canceled_period(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    canceled = (now_ms() - 10 * 60_000) // 60_000 * 60_000  # inside the grace period
    world = await make_world(sdk, db, n_customers=1, meters={"calls": "sum"})
    customer = world.customers[0]
    final = Window(canceled - 5 * 24 * HOUR_MS, canceled)  # the period, cut at the cancel
    world.attributor.periods = [ItemPeriod(customer, "calls", "si_calls", final)]
    sub = await seed_billing(db, customer, {"si_calls": [final]})

    def event(id_: str, value: int) -> dict[str, object]:
        at = canceled - HOUR_MS
        return {
            "id": id_,
            "customer": customer,
            "meter": "calls",
            "value": value,
            "timestamp": at / 1000,
        }

    await ingest_and_aggregate(client, api_key, redis, settings, world, [event("a", 4)])
    # Stripe's default finalization grace (1 h); the reporter closes a period 45 min after.
    async with Reporter(
        rsettings.replace(reporter_invoice_grace_s=45 * 60.0), directory=wiring.customer_directory()
    ) as reporter:
        # The final invoice is a draft: the late usage is sent, timestamped in the period.
        await reporter.once()
        assert (await stripe_totals(emu, world))[(customer, "calls")] == 4
        # Finalized (invoice.finalized): later usage of the period is billed by nothing.
        await seed_invoice(db, customer, sub, final, status="open")
        sent = await stream_identifiers(emu)
        await ingest_and_aggregate(client, api_key, redis, settings, world, [event("b", 6)])
        await reporter.once()
        assert await stream_identifiers(emu) == sent  # nothing more sent
        assert reporter.metrics.waiting_period._value.get() == 1  # type: ignore[attr-defined]
        assert await db.fetchval("SELECT value FROM report_outbox WHERE status = 'waiting'") == 6
        await reporter.once()  # and stays so: never released, never sent twice
        assert await stream_identifiers(emu) == sent
    assert (await stripe_totals(emu, world))[(customer, "calls")] == 4
