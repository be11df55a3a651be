"""Stripe meter formulas, synced by billing, against the emulator's totals:

- a Stripe meter's formula is the aggregation of its event name for every tenant sharing the
  Stripe account, not only the billing default tenant, and the usage API agrees with what is
  reported;
- a Stripe `count` meter counts meter events and ignores their values (API reference, billing
  meter `default_aggregation.formula`), so the reporter's one event per bucket would bill 1 for 5
  events: meter refuses to report to it (usage waits, counted) until a `sum` meter replaces it.
"""

from __future__ import annotations

import argparse
import time
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import stripe

from meter import wiring
from meter.billing import store
from meter.billing.cli import run_sync
from meter.cli import _meters
from meter.config import Settings
from meter.stripe_emulator.server import RunningEmulator
from reporter.worker import Reporter
from tests.integration.aggregator.conftest import Client

from .conftest import control, ingest_and_aggregate, make_world, now_ms


async def _store_meter(db: asyncpg.Connection, meter: Any) -> store.Effects:
    """Write a Stripe meter as the webhook and `meter sync` do (default tenant: `default`)."""

    async def same(kind: str, id_: str) -> Any:
        return meter.to_dict()

    async with db.transaction():
        return await store.apply_meter(db, meter.to_dict(), int(time.time()), same, "default")


async def _total(emu: RunningEmulator, meter_id: str, customer: str) -> Decimal:
    doc = await control(emu, "GET", f"/meters/{meter_id}/totals")
    return Decimal(str(doc["totals"].get(customer, 0)))


async def test_stripe_formula_applies_to_a_non_default_tenant(
    client: Client,
    api_key: str,
    redis: Any,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    world = await make_world(sdk, db, n_customers=1, meters={"gauge": "sum"})
    cus = world.customers[0]
    # The Stripe meter is a `last` meter, synced; tenant `acme` (the test key's) is not the
    # billing default tenant and has no local definition.
    last = await sdk.v1.billing.meters.create_async(
        {
            "display_name": "level",
            "event_name": "level",
            "default_aggregation": {"formula": "last"},
        }
    )
    await _store_meter(db, last)
    for p in list(world.attributor.periods):
        world.attributor.periods.append(type(p)(p.customer, "level", p.item + "_l", p.period))
    at = (now_ms() - 30 * 60_000) / 1000
    events = [
        {"id": "l1", "customer": cus, "meter": "level", "value": 10, "timestamp": at},
        {"id": "l2", "customer": cus, "meter": "level", "value": 12, "timestamp": at + 1},
    ]
    await ingest_and_aggregate(client, api_key, redis, settings, world, events)
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
    assert await _total(emu, last.id, cus) == 12

    await db.execute(
        "INSERT INTO customers (stripe_id, tenant, external_id, event_created)"
        " VALUES ($1, 'acme', $1, 0)",
        cus,
    )
    response = await client.get(
        f"/v1/customers/{cus}/usage", headers={"Authorization": f"Bearer {api_key}"}
    )
    doc = await response.json()
    assert response.status == 200, doc
    level = next(i for i in doc["items"] if i["meter"] == "level")
    assert (level["aggregation"], level["quantity"]) == ("last", "12")


async def test_a_count_meter_is_refused_and_its_usage_waits_for_a_sum_meter(
    client: Client,
    api_key: str,
    redis: Any,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world = await make_world(sdk, db, n_customers=1, meters={"calls": "sum"})
    cus = world.customers[0]
    counting = await sdk.v1.billing.meters.create_async(
        {
            "display_name": "requests",
            "event_name": "requests",
            "default_aggregation": {"formula": "count"},
        }
    )
    effects = await _store_meter(db, counting)
    assert effects.refused_meters
    assert counting.id in effects.refused_meters[0]
    assert await db.fetchval("SELECT NOT reportable FROM billing_meters WHERE id = $1", counting.id)
    # `meter sync` stores it too, and fails naming the meter and the fix.
    code = await run_sync(rsettings, argparse.Namespace(only=["billing.meter"]))
    err = capsys.readouterr().err
    assert code == 1
    assert counting.id in err
    assert "'requests'" in err
    assert "formula 'sum'" in err
    assert "meter meters define requests --aggregation count" in err

    for p in list(world.attributor.periods):
        world.attributor.periods.append(type(p)(p.customer, "requests", p.item + "_r", p.period))
    at = (now_ms() - 30 * 60_000) / 1000
    events = [
        {"id": f"r{i}", "customer": cus, "meter": "requests", "value": 1, "timestamp": at + i}
        for i in range(5)
    ]
    await ingest_and_aggregate(client, api_key, redis, settings, world, events)
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
        # Nothing reaches the count meter (it would hold 1); the usage waits, counted.
        assert await _total(emu, counting.id, cus) == 0
        assert reporter.metrics.waiting_meter._value.get() > 0  # type: ignore[attr-defined]

        # The fix the error names: a `sum` meter for the event name, and a local count.
        await sdk.v1.billing.meters.deactivate_async(counting.id)
        await _store_meter(db, await sdk.v1.billing.meters.retrieve_async(counting.id))
        summing = await sdk.v1.billing.meters.create_async(
            {
                "display_name": "requests",
                "event_name": "requests",
                "default_aggregation": {"formula": "sum"},
            }
        )
        await _store_meter(db, summing)
        args = argparse.Namespace(
            meters_command="define",
            name="requests",
            aggregation="count",
            unique_property=None,
            tenant="acme",
        )
        assert await _meters(settings, args) == 0
        listed = argparse.Namespace(meters_command="list", tenant="acme")
        capsys.readouterr()
        assert await _meters(settings, listed) == 0
        lines = capsys.readouterr().out.splitlines()
        assert f"acme\trequests\tcount\tlocal\t{summing.id}:sum\t-" in lines
        assert f"*\trequests\tsum\tstripe\t{summing.id}:sum\t-" in lines
        await reporter.once()
        assert await _total(emu, summing.id, cus) == 5
        assert reporter.metrics.waiting_meter._value.get() == 0  # type: ignore[attr-defined]
