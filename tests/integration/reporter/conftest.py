"""Reporter tests: ingest API → aggregator (in-test attributor) → reporter → the Stripe emulator,
with real Postgres and Redis; Stripe only through the official SDK."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest
import stripe
from redis.asyncio import Redis

from aggregator.attribution import ItemPeriod
from aggregator.windows import HOUR_MS, Window
from aggregator.worker import Worker
from meter.config import Settings
from meter.stripe_emulator import EmulatorConfig
from meter.stripe_emulator.server import RunningEmulator, running_emulator
from tests.integration.aggregator.conftest import Client, PeriodsAttributor, post_events

# Our aggregation → the Stripe meter formula it is reported to.
FORMULA = {"sum": "sum", "count": "sum", "last": "last", "max": "last", "unique_count": "last"}
METERS = {
    "calls": "sum",
    "requests": "count",
    "gauge": "last",
    "peak": "max",
    "seats": "unique_count",
}


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with running_emulator(EmulatorConfig(port=0, meter_events_port=0)) as running:
        yield running


@pytest.fixture
def sdk(emu: RunningEmulator) -> stripe.StripeClient:
    return emu.client()


@pytest.fixture
def rsettings(settings: Settings, emu: RunningEmulator) -> Settings:
    """Settings for a reporter on this test's DB, talking to the emulator, with small timings."""
    return settings.replace(
        stripe_api_key=emu.api_key,
        stripe_api_base=emu.api_base,
        stripe_meter_events_base=emu.meter_events_base,
        reporter_timeout_s=0.5,
        reporter_backoff_base_s=0.01,
        reporter_backoff_cap_s=0.05,
        reporter_poll_interval_s=0.02,
        reporter_rate_limit=100_000.0,
        reporter_concurrency=2,
        reporter_invoice_grace_s=60.0,
    )


@dataclass
class World:
    """Stripe customers and meters in the emulator, and the periods our attributor knows."""

    customers: list[str]
    meter_ids: dict[str, str]
    attributor: PeriodsAttributor


async def make_world(
    sdk: stripe.StripeClient,
    db: asyncpg.Connection,
    n_customers: int = 2,
    meters: dict[str, str] | None = None,
    period: Window | None = None,
) -> World:
    meters = METERS if meters is None else meters
    customers = [
        (await sdk.v1.customers.create_async({"email": f"c{i}@example.com"})).id
        for i in range(n_customers)
    ]
    meter_ids: dict[str, str] = {}
    for name, aggregation in meters.items():
        created = await sdk.v1.billing.meters.create_async(
            {
                "display_name": name,
                "event_name": name,
                "default_aggregation": {"formula": FORMULA[aggregation]},  # type: ignore[typeddict-item]
            }
        )
        meter_ids[name] = created.id
        if aggregation != "sum":
            await db.execute(
                "INSERT INTO meter_definitions (tenant, meter, aggregation, unique_property)"
                " VALUES ('acme', $1, $2, $3)",
                name,
                aggregation,
                "user" if aggregation == "unique_count" else None,
            )
    period = period or Window(now_ms() - 10 * 24 * HOUR_MS, now_ms() + 20 * 24 * HOUR_MS)
    periods = [ItemPeriod(c, m, f"si_{c[-6:]}_{m}", period) for c in customers for m in meters]
    return World(customers, meter_ids, PeriodsAttributor(periods))


async def seed_billing(
    db: asyncpg.Connection, customer: str, items: dict[str, Sequence[Window]]
) -> str:
    """Billing's rows for these items of one subscription (as its webhooks would store them):
    each item's periods, the last one current. Returns the subscription id."""
    sub = f"sub_{customer[-8:]}"
    await db.execute(
        "INSERT INTO subscriptions (id, customer, status, stripe_created, event_created)"
        " VALUES ($1, $2, 'active', now(), 0) ON CONFLICT DO NOTHING",
        sub,
        customer,
    )
    for item, windows in items.items():
        last = windows[-1]
        await db.execute(
            "INSERT INTO subscription_items (id, subscription, price, current_period_start,"
            " current_period_end) VALUES ($1, $2, 'price_metered', $3, $4)"
            " ON CONFLICT (id) DO UPDATE SET current_period_start = EXCLUDED.current_period_start,"
            " current_period_end = EXCLUDED.current_period_end",
            item,
            sub,
            utc(last.start_ms),
            utc(last.end_ms),
        )
        for w in windows:
            await db.execute(
                "INSERT INTO subscription_item_periods (item, period_start, period_end)"
                " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                item,
                utc(w.start_ms),
                utc(w.end_ms),
            )
    return sub


async def seed_invoice(
    db: asyncpg.Connection, customer: str, sub: str, period: Window, status: str = "open"
) -> None:
    """A cycle invoice of `period` as billing stores it from invoice.finalized/paid."""
    await db.execute(
        "INSERT INTO invoices (id, customer, subscription, status, billing_reason, currency,"
        " subtotal, total, amount_due, amount_paid, amount_remaining, period_start, period_end,"
        " stripe_created, event_created)"
        " VALUES ($1, $2, $3, $4, 'subscription_cycle', 'usd', 0, 0, 0, 0, 0, $5, $6, now(), 0)",
        f"in_{sub}_{period.end_ms}",
        customer,
        sub,
        status,
        utc(period.start_ms),
        utc(period.end_ms),
    )


def make_events(
    world: World, n: int, seed: int, *, hours: int = 6, dup_every: int = 10
) -> list[dict[str, Any]]:
    """Events over the last `hours`, every `dup_every`-th a duplicate id of an earlier one."""
    import random

    rng = random.Random(seed)
    base = now_ms() - hours * HOUR_MS
    out: list[dict[str, Any]] = []
    for i in range(n):
        if dup_every and i % dup_every == dup_every - 1:
            out.append(dict(out[rng.randrange(len(out))]))
            continue
        out.append(
            {
                "id": f"s{seed}-{i}",
                "customer": rng.choice(world.customers),
                "meter": rng.choice(sorted(world.meter_ids)),
                "value": rng.choice([1, 2.5, 10, 0.25, 7]),
                "timestamp": (base + rng.randrange(hours * HOUR_MS - 60_000)) / 1000,
                "properties": {"user": rng.choice(["u1", "u2", "u3", "u4"])},
            }
        )
    return out


async def ingest_and_aggregate(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    world: World,
    events: Sequence[dict[str, Any]],
) -> None:
    await post_events(client, api_key, events)
    async with Worker(settings, redis, attributor=world.attributor) as worker:
        await worker.drain()


async def expected_totals(db: asyncpg.Connection) -> dict[tuple[str, str], Decimal]:
    """Per (customer, meter), what Stripe must hold: computed from our attributed rollups."""
    rows = await db.fetch(
        """
        SELECT customer, meter, aggregation,
               sum(value) AS total, max(value_max) AS peak, sum(unique_count) AS uniq,
               (array_agg(last_value ORDER BY last_at DESC, last_event_id DESC))[1] AS last
        FROM usage_rollup_values WHERE subscription_item IS NOT NULL AND customer LIKE 'cus_%'
        GROUP BY customer, meter, aggregation
        """
    )
    out: dict[tuple[str, str], Decimal] = {}
    for r in rows:
        agg = r["aggregation"]
        value = {"max": r["peak"], "unique_count": r["uniq"], "last": r["last"]}.get(
            agg, r["total"]
        )
        out[(r["customer"], r["meter"])] = Decimal(value)
    return out


async def control(emu: RunningEmulator, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{emu.api_base}/_emulator{path}", json=body or {}) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def stripe_totals(emu: RunningEmulator, world: World) -> dict[tuple[str, str], Decimal]:
    """Per (customer, meter), what the emulator holds."""
    out: dict[tuple[str, str], Decimal] = {}
    for name, meter_id in world.meter_ids.items():
        doc = await control(emu, "GET", f"/meters/{meter_id}/totals")
        for customer, total in doc["totals"].items():
            out[(customer, name)] = Decimal(str(total))
    return out


async def stream_identifiers(emu: RunningEmulator) -> list[str]:
    """Identifiers of every event in every stream/v1 request the emulator received."""
    log = (await control(emu, "GET", "/requests"))["data"]
    out: list[str] = []
    for entry in log:
        params = entry.get("params") or {}
        if entry["path"].endswith("/meter_event_stream"):
            out += [e["identifier"] for e in params.get("events", [])]
        elif entry["path"] == "/v1/billing/meter_events":
            out.append(params.get("identifier"))
    return out


def close(a: dict[tuple[str, str], Decimal], b: dict[tuple[str, str], Decimal]) -> bool:
    """Equal per key, ignoring float rounding in the emulator's JSON numbers."""
    keys = {k for k, v in a.items() if v} | {k for k, v in b.items() if v}
    return all(abs(a.get(k, Decimal(0)) - b.get(k, Decimal(0))) < Decimal("1e-9") for k in keys)


def utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
