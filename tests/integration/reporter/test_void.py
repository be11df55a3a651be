"""`meter usage void`: ingest → aggregate → report → void → report, against the emulator."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest
import stripe
from redis.asyncio import Redis

from meter import wiring
from meter.cli import main
from meter.config import Settings
from meter.stripe_emulator.server import RunningEmulator
from reporter.voids import VoidRefused, void_event
from reporter.worker import Reporter
from tests.integration.aggregator.conftest import Client

from .conftest import ingest_and_aggregate, make_world, now_ms, stripe_totals


async def test_void_sends_the_negative_delta_once(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world = await make_world(
        sdk, db, n_customers=1, meters={"calls": "sum", "requests": "count", "peak": "max"}
    )
    cus = world.customers[0]
    at = (now_ms() - 30 * 60_000) / 1000
    events = [
        {"id": eid, "customer": cus, "meter": meter, "value": value, "timestamp": at + i}
        for i, (eid, meter, value) in enumerate(
            [
                ("e1", "calls", 1),
                ("e2", "calls", 2.5),
                ("e3", "calls", 10),
                ("r1", "requests", 4),
                ("r2", "requests", 4),
                ("p1", "peak", 7),
            ]
        )
    ]
    await ingest_and_aggregate(client, api_key, redis, settings, world, events)

    async with Reporter(rsettings, directory=wiring.customer_directory()) as reporter:
        assert await reporter.once() > 0
        totals = await stripe_totals(emu, world)
        assert totals[(cus, "calls")] == Decimal("13.5")
        assert totals[(cus, "requests")] == 2

        voided = await void_event(db, "acme", "e2", wiring.subtract_event())
        assert not voided.already
        assert voided.value == Decimal("2.5")
        assert (await void_event(db, "acme", "r1", wiring.subtract_event())).value == 1
        assert await reporter.once() == 2  # one negative delta per shrunk bucket
        totals = await stripe_totals(emu, world)
        assert totals[(cus, "calls")] == 11  # e1 + e3
        assert totals[(cus, "requests")] == 1

        # A second void is a no-op: nothing changes, nothing is sent.
        version = await db.fetchval("SELECT max(version) FROM usage_rollups WHERE meter = 'calls'")
        assert (await void_event(db, "acme", "e2", wiring.subtract_event())).already
        assert (
            await db.fetchval("SELECT max(version) FROM usage_rollups WHERE meter = 'calls'")
            == version
        )
        assert await reporter.once() == 0
        assert await stripe_totals(emu, world) == totals
        assert await db.fetchval("SELECT count(*) FROM usage_voids") == 2

    # Absolute meters are refused, and nothing is recorded for them.
    with pytest.raises(VoidRefused, match="only sum and count meters"):
        await void_event(db, "acme", "p1", wiring.subtract_event())
    assert await db.fetchval("SELECT count(*) FROM usage_voids WHERE event_id = 'p1'") == 0

    # The CLI: an unknown id is a clear error with exit code 2; a repeated void exits 0.
    monkeypatch.setenv("METER_DATABASE_URL", settings.database_url)
    code = await asyncio.to_thread(main, ["usage", "void", "--id", "nope", "--tenant", "acme"])
    assert code == 2
    assert "no aggregated event 'nope'" in capsys.readouterr().err
    code = await asyncio.to_thread(main, ["usage", "void", "--id", "e2", "--tenant", "acme"])
    assert code == 0
    assert "already voided" in capsys.readouterr().out
