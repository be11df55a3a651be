"""Exactly once under Stripe faults, crashes and concurrent reporters."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter

import asyncpg
import pytest
import stripe
from redis.asyncio import Redis

from meter import wiring
from meter.config import Settings
from meter.stripe_emulator.server import RunningEmulator
from reporter.worker import Reporter
from tests.harness import failing_first, lost_connection_errors, terminate_others
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

STREAM = "/v2/billing/meter_event_stream"
V1 = "/v1/billing/meter_events"


async def outcomes(emu: RunningEmulator, path: str) -> Counter[str]:
    log = (await control(emu, "GET", "/requests", {"path": path}))["data"]
    return Counter(e["outcome"] for e in log)


@pytest.mark.parametrize("transport", ["v2", "v1"])
async def test_faults_never_lose_or_double_count(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
    transport: str,
) -> None:
    world = await make_world(sdk, db)
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, make_events(world, 300, seed=3)
    )
    path = STREAM if transport == "v2" else V1
    # Rules apply in order of their remaining counts: a 429 burst, 5xx, a timeout past the
    # client's, and "applied but the answer dropped", then random ones among normal traffic.
    for rule in (
        {"mode": "rate_limit", "count": 4},
        {"mode": "error", "status": 500, "count": 2},
        {"mode": "error", "status": 503, "count": 1},
        {"mode": "timeout", "delay": 1.0, "count": 1},
        {"mode": "drop", "count": 3},
        {"mode": "drop", "probability": 0.2, "count": 4},
        {"mode": "rate_limit", "probability": 0.2, "count": 4},
    ):
        await control(emu, "POST", "/faults", {"path": path, "seed": 7, **rule})
    async with Reporter(
        rsettings.replace(reporter_transport=transport), directory=wiring.customer_directory()
    ) as reporter:
        await reporter.once()
        assert await reporter.pending() == 0
        seen = await outcomes(emu, path)
        # Every fault fired, and the retries got through.
        assert seen["fault:rate_limit"] >= 4
        assert seen["dropped"] >= 3
        assert seen["fault:timeout"] == 1
        assert seen["ok"] + seen["replayed"] > 0
        assert reporter.metrics.rate_limited._value.get() >= 4
        assert reporter.metrics.backoff_seconds._value.get() > 0
    # Events were sent more than once (the dropped and timed-out tries), counted once.
    identifiers = await stream_identifiers(emu)
    assert len(identifiers) > len(set(identifiers))
    assert close(await stripe_totals(emu, world), await expected_totals(db))
    assert await db.fetchval("SELECT count(*) FROM report_outbox WHERE status <> 'sent'") == 0


async def test_two_reporters_send_each_row_once(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    world = await make_world(sdk, db, n_customers=4)
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, make_events(world, 600, seed=4)
    )
    # Small batches and several lanes each, so the two really interleave.
    s = rsettings.replace(reporter_batch_size=5, reporter_concurrency=3)
    async with (
        Reporter(s, directory=wiring.customer_directory()) as a,
        Reporter(s, directory=wiring.customer_directory()) as b,
    ):
        await asyncio.gather(a.build(), b.build())
        sent = await asyncio.gather(a.send_due(), b.send_due())
        assert min(sent) > 0
        assert sum(sent) == await db.fetchval("SELECT count(*) FROM report_outbox")
    identifiers = await stream_identifiers(emu)
    assert len(identifiers) == len(set(identifiers)) == sum(sent)
    assert close(await stripe_totals(emu, world), await expected_totals(db))


async def test_session_expiry_renews_and_resends(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    world = await make_world(sdk, db)
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, make_events(world, 100, seed=5)
    )
    async with Reporter(
        rsettings.replace(reporter_concurrency=1), directory=wiring.customer_directory()
    ) as reporter:
        await reporter.once()
        assert reporter.metrics.session_renewals._value.get() == 1
        # The session expires mid-run: the next request meets temporary_session_expired.
        await control(emu, "POST", "/sessions/expire")
        await ingest_and_aggregate(
            client, api_key, redis, settings, world, make_events(world, 100, seed=6)
        )
        await reporter.once()
        assert reporter.metrics.session_renewals._value.get() == 2
        assert reporter.metrics.responses.labels("401")._value.get() == 1
    log = (await control(emu, "GET", "/requests", {"path": STREAM}))["data"]
    assert [e["status"] for e in log].count(401) == 1
    assert close(await stripe_totals(emu, world), await expected_totals(db))


def env_for(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "METER_DATABASE_URL": settings.database_url,
        "STRIPE_API_KEY": settings.stripe_api_key or "",
        "STRIPE_API_BASE": settings.stripe_api_base or "",
        "STRIPE_METER_EVENTS_BASE": settings.stripe_meter_events_base or "",
        "METER_REPORTER_BATCH_SIZE": "3",
        "METER_REPORTER_CONCURRENCY": "1",
        "METER_REPORTER_TIMEOUT": "2s",
        "METER_LOG_LEVEL": "warning",
    }


async def report(settings: Settings, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "reporter",
        "report",
        "--once",
        *args,
        env=env_for(settings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_kill_9_between_send_and_mark_never_double_counts(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    world = await make_world(sdk, db)
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, make_events(world, 200, seed=8)
    )
    # Killed right after Stripe answered, before the rows were marked; at other points too.
    for fault in ("after_send:1", "after_claim:2", "after_mark:2", "after_send:2"):
        proc = await report(rsettings, "--fault", fault)
        assert await proc.wait() == -signal.SIGKILL, fault
    # Restarted without faults: it finishes the job.
    proc = await report(rsettings)
    assert await proc.wait() == 0
    assert await db.fetchval("SELECT count(*) FROM report_outbox WHERE status <> 'sent'") == 0
    identifiers = await stream_identifiers(emu)
    assert len(set(identifiers)) > 4 * 3
    # The batches sent before a kill were sent again (same identifiers)...
    assert len(identifiers) > len(set(identifiers))
    # ...and Stripe counted every event once.
    assert close(await stripe_totals(emu, world), await expected_totals(db))


async def test_limiter_keeps_under_the_configured_rate(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
) -> None:
    world = await make_world(sdk, db, n_customers=3, meters={"calls": "sum", "requests": "count"})
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, make_events(world, 600, seed=11, hours=40)
    )
    rate, burst = 150.0, 10
    s = rsettings.replace(
        reporter_rate_limit=rate, reporter_rate_burst=burst, reporter_batch_size=10
    )
    async with Reporter(s, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
    log = (await control(emu, "GET", "/requests", {"path": STREAM}))["data"]
    sends = [(e["time"], len(e["params"]["events"])) for e in log]
    assert sum(n for _, n in sends) > 150
    # Counted in the emulator's log: by any request, no more than burst + rate·elapsed events.
    # The log has arrival times, not the instants the limiter granted the sends: the first
    # request may arrive late (a busy machine), which shortens the measured elapsed time, so
    # allow that much arrival jitter. Without a limiter all ~700 events arrive in one burst.
    jitter_s = 0.1
    start = sends[0][0]
    running = 0
    for at, n in sends:
        running += n
        assert running <= burst + rate * (at - start + jitter_s) + n, (running, at - start)
    assert close(await stripe_totals(emu, world), await expected_totals(db))


async def test_the_run_loop_outlives_connections_terminated_under_its_pool(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    rsettings: Settings,
    db: asyncpg.Connection,
    emu: RunningEmulator,
    sdk: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a round meets when Postgres terminates a pooled connection (asyncpg raises one of
    these, depending on when the termination reached it), then every connection terminated:
    the loop goes on and sends everything."""
    world = await make_world(sdk, db)
    await ingest_and_aggregate(
        client, api_key, redis, settings, world, make_events(world, 50, seed=5)
    )
    s = rsettings.replace(reporter_poll_interval_s=0.05)
    stop = asyncio.Event()
    async with Reporter(s, directory=wiring.customer_directory()) as reporter:
        failures = lost_connection_errors()
        monkeypatch.setattr(reporter, "build", failing_first(reporter.build, failures))
        loop = asyncio.create_task(reporter.run(stop))
        await terminate_others(db)
        async with asyncio.timeout(60):
            while await db.fetchval(
                "SELECT count(*) FROM report_outbox WHERE status <> 'sent'"
            ) or not await db.fetchval("SELECT count(*) FROM report_outbox"):
                assert not loop.done(), loop.exception()
                await asyncio.sleep(0.05)
        assert not failures
        stop.set()
        await loop
    assert close(await stripe_totals(emu, world), await expected_totals(db))
