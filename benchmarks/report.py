"""Reporter benchmark (`make bench-report`): events/s delivered versus the configured rate limit.

Against the in-process Stripe emulator (v2 meter event stream, official SDK), each run on a fresh
outbox of N pending rows (default 20,000, inserted directly into `report_outbox`, spread over 50
Stripe customers of one `sum` meter), the reporter sends everything (`Reporter.send_due`) with
the configured limit (METER_REPORTER_RATE_LIMIT, default 2000/s here):

1. no injected latency;
2. 50 ms latency on every stream request (`/_emulator/faults`, mode `latency`).

The limit measured against is the one configured, in the same run; the ratio is delivered/limit.
The limiter's burst (one batch, 100 events) is included, so a ratio slightly above 1.0 is possible
on short runs. 429s are counted from the emulator's request log. The emulator does not enforce a
rate limit of its own (429s only come from injected `rate_limit` faults), so "zero 429s" here
shows the reporter triggers no throttling path, not that a server-side limit was respected; the
busiest second seen by the emulator is printed for that.

Needs Postgres: METER_DATABASE_URL when set, else 127.0.0.1:5432 (database `test`). It makes its
own database `meter_bench_report`, anew for every run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from meter import wiring
from meter.config import Settings
from meter.migrate import migrate
from meter.stripe_emulator import EmulatorConfig
from meter.stripe_emulator.server import RunningEmulator, running_emulator
from reporter.worker import Reporter

DATABASE = "meter_bench_report"
EVENT_NAME = "bench_calls"
STREAM_PATH = "/v2/billing/meter_event_stream"

INSERT_ROWS = """
INSERT INTO report_outbox
    (identifier, tenant, customer, meter, subscription_item, period_start, stripe_customer,
     event_name, value, absolute, event_time)
SELECT $1 || '-' || i, 'bench', c.customer, $2, 'si_bench', date_trunc('month', now()),
       c.customer, $2, 1, false, now() - interval '1 hour'
FROM generate_series(1, $3) AS i
JOIN unnest($4::text[]) WITH ORDINALITY AS c(customer, n) ON c.n = 1 + i % $5
"""


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    rate_limited: int
    busiest_second: int

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


def database_urls() -> tuple[str, str]:
    """(admin URL, benchmark database URL)."""
    admin = os.environ.get("METER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    bench = urlunsplit(urlsplit(admin)._replace(path=f"/{DATABASE}"))
    return admin, bench


async def fresh_database(admin: str, bench: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(bench)
    try:
        await migrate(conn)
    finally:
        await conn.close()


async def control(emu: RunningEmulator, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{emu.api_base}/_emulator{path}", json=body or {}) as response,
    ):
        response.raise_for_status()
        return await response.json()


async def run_once(
    name: str, settings: Settings, emu: RunningEmulator, customers: list[str], n: int
) -> Result:
    """Fill the outbox with n rows, send them all, and measure."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("TRUNCATE report_outbox")
        await conn.execute(INSERT_ROWS, name, EVENT_NAME, n, customers, len(customers))
    finally:
        await conn.close()
    await control(emu, "DELETE", "/requests")
    async with Reporter(settings, directory=wiring.customer_directory()) as reporter:
        started = time.perf_counter()
        claimed = await reporter.send_due()
        seconds = time.perf_counter() - started
        left = await reporter.pending()
    if claimed != n or left:
        raise SystemExit(f"{name}: sent {claimed} of {n}, {left} still pending")
    log = (await control(emu, "GET", "/requests", {"path": STREAM_PATH}))["data"]
    per_second: Counter[int] = Counter()
    for entry in log:
        if entry["status"] == 200:
            per_second[int(entry["time"])] += len((entry.get("params") or {}).get("events", []))
    rate_limited = sum(1 for e in log if e["status"] == 429)
    return Result(name, n, seconds, rate_limited, max(per_second.values(), default=0))


async def main(n: int, rate: float) -> None:
    admin, bench = database_urls()
    await fresh_database(admin, bench)
    async with running_emulator(EmulatorConfig(port=0, meter_events_port=0)) as emu:
        sdk = emu.client()
        await sdk.v1.billing.meters.create_async(
            {
                "display_name": EVENT_NAME,
                "event_name": EVENT_NAME,
                "default_aggregation": {"formula": "sum"},
            }
        )
        customers = [
            (await sdk.v1.customers.create_async({"email": f"b{i}@example.com"})).id
            for i in range(50)
        ]
        settings = Settings.from_env().replace(
            database_url=bench,
            stripe_api_key=emu.api_key,
            stripe_api_base=emu.api_base,
            stripe_meter_events_base=emu.meter_events_base,
            reporter_transport="v2",
            reporter_rate_limit=rate,
        )
        results = [await run_once("no-latency", settings, emu, customers, n)]
        await control(
            emu,
            "POST",
            "/faults",
            {"path": STREAM_PATH, "mode": "latency", "delay": 0.05, "count": None},
        )
        results.append(await run_once("latency-50ms", settings, emu, customers, n))
        await control(emu, "DELETE", "/faults")
    print(
        f"reporter v2 stream, limit {rate:,.0f} events/s, batch {settings.reporter_batch_size}, "
        f"{settings.reporter_concurrency} lanes, {n:,} events per run"
    )
    print("| run | events/s | of limit | busiest second (events) | 429s |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.name} | {r.per_second:,.0f} | {r.per_second / rate:.1%} | "
            f"{r.busiest_second:,} | {r.rate_limited} |"
        )
    print("emulator enforces no rate limit of its own: 429s would only come from injected faults")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--rate",
        type=float,
        default=float(os.environ.get("METER_REPORTER_RATE_LIMIT", "2000")),
        help="events/s (default METER_REPORTER_RATE_LIMIT or 2000)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rate))
