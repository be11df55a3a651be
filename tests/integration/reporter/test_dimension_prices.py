"""Pricing per dimension, against the emulator: a meter's combinations mapped to Stripe meters of
their own are reported there, the rest to the meter's own Stripe meter; each Stripe meter's
total equals the accepted usage of its combinations (the oracle: the test's own sums of the
events it sent), retries and a second build send nothing twice."""

from __future__ import annotations

import argparse
from decimal import Decimal

import asyncpg
import pytest
import stripe
from redis.asyncio import Redis

from meter import wiring
from meter.billing.cli import run_sync
from meter.cli import _meters
from meter.config import Settings
from meter.stripe_emulator.server import RunningEmulator
from reporter.worker import Reporter
from tests.integration.aggregator.conftest import Client

from .conftest import (
    ingest_and_aggregate,
    make_world,
    now_ms,
    stream_identifiers,
    stripe_totals,
)


def _events(cus: str, tag: str, at_s: float) -> list[dict[str, object]]:
    rows = [("large", 40), ("small", 7), ("large", 2.5), (None, 1), ("small", 3), ("large", 10)]
    return [
        {
            "id": f"{tag}{i}",
            "customer": cus,
            "meter": "tokens",
            "value": v,
            "timestamp": at_s + i,
            "properties": {"region": "eu"} | ({} if m is None else {"model": m}),
        }
        for i, (m, v) in enumerate(rows)
    ]


async def test_mapped_combinations_go_to_their_stripe_meter(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    world = await make_world(
        sdk, db, n_customers=2, meters={"tokens": "sum", "tokens_large": "sum"}
    )
    start = now_ms() - 3 * 3_600_000
    await db.execute(
        "INSERT INTO meter_dimensions (tenant, meter, effective_from, keys)"
        " VALUES ('acme', 'tokens', to_timestamp($1 / 1000.0), '{model}')",
        start,
    )
    args = argparse.Namespace(
        meters_command="map",
        name="tokens",
        filter="model=large",
        event_name="tokens_large",
        price="price_large",
        remove=False,
        tenant="acme",
    )
    assert await _meters(settings, args) == 0
    a, b = world.customers
    await ingest_and_aggregate(
        client, api_key, redis, settings, world,
        _events(a, "a", start / 1000 + 60) + _events(b, "b", start / 1000 + 3_700),
    )  # fmt: skip
    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        assert await reporter.once() > 0
        # Late usage of the same hours grows the same buckets: only the deltas go out.
        await ingest_and_aggregate(
            client, api_key, redis, settings, world, _events(a, "late", start / 1000 + 90)
        )
        assert await reporter.once() > 0
        assert await reporter.once() == 0
    totals = await stripe_totals(emu, world)
    large = Decimal("52.5")
    rest = Decimal(11)
    assert totals == {
        (a, "tokens_large"): 2 * large,
        (a, "tokens"): 2 * rest,
        (b, "tokens_large"): large,
        (b, "tokens"): rest,
    }
    identifiers = await stream_identifiers(emu)
    assert len(identifiers) == len(set(identifiers))


async def test_map_refuses_mixed_keys_and_the_meter_itself(
    settings: Settings, db: asyncpg.Connection
) -> None:
    def ns(**kw: object) -> argparse.Namespace:
        base = {"meters_command": "map", "name": "tokens", "price": None, "remove": False,
                "tenant": "acme", "event_name": "tokens_x"}  # fmt: skip
        return argparse.Namespace(**(base | kw))

    assert await _meters(settings, ns(filter="model=large")) == 0
    assert await _meters(settings, ns(filter="region=eu")) == 2
    assert await _meters(settings, ns(filter="model=small", event_name="tokens")) == 2
    assert await _meters(settings, ns(filter="model")) == 2
    assert await _meters(settings, ns(filter="model=small,region=eu")) == 2
    assert await _meters(settings, ns(filter="model=large", remove=True)) == 0
    assert await db.fetchval("SELECT count(*) FROM meter_price_mappings") == 0


async def test_sync_says_what_stripe_lacks_for_a_mapping(
    rsettings: Settings,
    db: asyncpg.Connection,
    sdk: stripe.StripeClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await make_world(sdk, db, n_customers=1, meters={"tokens": "sum", "tokens_large": "sum"})
    for filter_, event_name in (("model=large", "tokens_large"), ("model=xl", "tokens_xl")):
        args = argparse.Namespace(
            meters_command="map", name="tokens", filter=filter_, event_name=event_name,
            price=None, remove=False, tenant="acme",
        )  # fmt: skip
        assert await _meters(rsettings, args) == 0
    capsys.readouterr()
    assert await run_sync(rsettings, argparse.Namespace(only=["billing.meter"])) == 0
    err = capsys.readouterr().err
    assert "no active Stripe meter with event name 'tokens_xl'" in err
    # tokens_large has its meter but no price on it yet.
    assert "→ tokens_large: no active price on that Stripe meter" in err
