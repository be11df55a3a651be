"""Usage API benchmark (`make bench-usage`): GET /v1/customers/{id}/usage next to a bare baseline.

10,000 customers, each on a subscription with three metered prices (graduated, volume, package)
on three meters plus a flat licensed fee, and a month of hourly rollup buckets per meter (21.6M
buckets) in Postgres. wrk (-t2 -c32) asks for the usage of random customers, against `meter serve`
and against the bare aiohttp baseline (benchmarks/baseline.py), same process count, same run.

Loading: the billing rows go in with COPY; the buckets with one INSERT … SELECT over
generate_series, which builds the rows inside Postgres (no client encoding, faster than COPY from
here), customer by customer so that index inserts are mostly in order; then the running totals
the usage API reads, folded from the buckets as the aggregator's rule says. Needs wrk and Postgres +
Redis as benchmarks/ingest.py does (database `meter_bench_usage`, made anew; `--reuse` keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
from redis import Redis

from aggregator import queries as aggregator_queries
from meter import auth
from meter.embedded import free_port
from meter.migrate import migrate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.ingest import start

HERE = Path(__file__).resolve().parent
DB = "meter_bench_usage"
HOUR = 3600
METERS = ("api_calls", "storage_gb", "emails")
PRICES = [
    ("price_grad", "tiered", "graduated", None, None, "mtr_0"),
    ("price_vol", "tiered", "volume", None, None, "mtr_1"),
    ("price_pkg", "per_unit", None, "250", '{"divide_by": 1000, "round": "up"}', "mtr_2"),
]
TIERS = '[{"up_to": 1000, "unit_amount_decimal": "3"}, {"up_to": null, "unit_amount_decimal": "1"}]'


def urls() -> tuple[str, str]:
    admin = os.environ.get("METER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    return admin, urlunsplit(urlsplit(admin)._replace(path=f"/{DB}"))


def cid(i: int) -> str:
    return f"c{i:07d}"


async def load(admin: str, bench: str, customers: int) -> str:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {DB}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(bench)
    try:
        await migrate(conn)
        key = await auth.create_key(conn, name="bench", tenant="bench")
        now = int(time.time()) // HOUR * HOUR
        start = now - 30 * 24 * HOUR
        period = (
            dt.datetime.fromtimestamp(start, dt.UTC),
            dt.datetime.fromtimestamp(start + 31 * 86400, dt.UTC),
        )
        await conn.copy_records_to_table(
            "billing_meters",
            records=[
                (f"mtr_{i}", m, "sum", "stripe_customer_id", "value", "active", 0)
                for i, m in enumerate(METERS)
            ],
            columns=[
                "id",
                "event_name",
                "formula",
                "customer_key",
                "value_key",
                "status",
                "event_created",
            ],
        )
        price_rows = [
            (
                pid,
                "prod",
                True,
                "usd",
                scheme,
                unit,
                mode,
                None if mode is None else TIERS,
                transform,
                "month",
                1,
                "metered",
                meter,
                0,
            )
            for pid, scheme, mode, unit, transform, meter in PRICES
        ]
        price_rows.append(
            (
                "price_flat",
                "prod",
                True,
                "usd",
                "per_unit",
                "4900",
                None,
                None,
                None,
                "month",
                1,
                "licensed",
                None,
                0,
            )
        )
        await conn.executemany(
            "INSERT INTO prices (id, product, active, currency, billing_scheme,"
            " unit_amount_decimal, tiers_mode, tiers, transform_quantity, recurring_interval,"
            " recurring_interval_count, usage_type, meter, event_created)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10, $11, $12, $13, $14)",
            price_rows,
        )
        ids = [cid(i) for i in range(customers)]
        await conn.copy_records_to_table(
            "customers",
            records=[(f"cus_{c}", "bench", c, 0) for c in ids],
            columns=["stripe_id", "tenant", "external_id", "event_created"],
        )
        await conn.copy_records_to_table(
            "subscriptions",
            records=[(f"sub_{c}", f"cus_{c}", "active", "usd", *period, period[0], 0) for c in ids],
            columns=[
                "id",
                "customer",
                "status",
                "currency",
                "current_period_start",
                "current_period_end",
                "stripe_created",
                "event_created",
            ],
        )
        items = [
            (f"si_{c}_{n}", f"sub_{c}", p[0], None, p[5]) for c in ids for n, p in enumerate(PRICES)
        ]
        items += [(f"si_{c}_f", f"sub_{c}", "price_flat", 1, None) for c in ids]
        await conn.copy_records_to_table(
            "subscription_items",
            records=[(*i, *period) for i in items],
            columns=[
                "id",
                "subscription",
                "price",
                "quantity",
                "meter",
                "current_period_start",
                "current_period_end",
            ],
        )
        await conn.copy_records_to_table(
            "subscription_item_periods",
            records=[(i[0], *period, i[4]) for i in items],
            columns=["item", "period_start", "period_end", "meter"],
        )
        t0 = time.monotonic()
        step = 500
        for first in range(0, customers, step):
            await conn.execute(
                """
                INSERT INTO usage_rollups (tenant, customer, meter, subscription_item,
                    period_start, bucket_start, bucket_end, event_count, value_sum, value_max,
                    last_value, last_at, last_event_id)
                SELECT 'bench', 'c' || lpad(c::text, 7, '0'), m.name,
                    'si_c' || lpad(c::text, 7, '0') || '_' || (m.n - 1), $1,
                    b, b + interval '1 hour',
                    10, (c + h) % 50 + 1, (c + h) % 50 + 1, 1, b, 'e'
                FROM generate_series($2::int, $3::int) AS c
                CROSS JOIN unnest($4::text[]) WITH ORDINALITY AS m(name, n)
                CROSS JOIN generate_series(0, 719) AS h
                CROSS JOIN LATERAL (SELECT $1::timestamptz + h * interval '1 hour' AS b) AS t
                ORDER BY c, m.name, h
                """,
                period[0],
                first,
                min(first + step, customers) - 1,
                list(METERS),
            )
            print(
                f"\rbuckets: {min(first + step, customers) * 3 * 720:,}"
                f" ({time.monotonic() - t0:.0f}s)",
                end="",
                file=sys.stderr,
            )
        print(file=sys.stderr)
        await fill_totals(conn)
        await conn.execute("VACUUM ANALYZE")
        return key
    finally:
        await conn.close()


def wrk(port: int, customers: int, key: str, seconds: int) -> dict[str, float]:
    out = subprocess_run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(HERE / "usage.lua"),
         f"http://127.0.0.1:{port}/v1/customers/x/usage", "--", str(customers), key]
    )  # fmt: skip
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    doc = orjson.loads(line.removeprefix("RESULT "))
    run_s = doc["duration_us"] / 1e6
    return {
        "rps": doc["requests"] / run_s,
        "p50_ms": doc["p50_us"] / 1000,
        "p99_ms": doc["p99_us"] / 1000,
        "errors": doc["errors"] + doc["non2xx"],
    }


def subprocess_run(cmd: list[str]) -> str:
    import subprocess

    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


async def fill_totals(conn: asyncpg.Connection) -> None:
    t0 = time.monotonic()
    # The aggregator writes buckets and totals together; the load above bypasses it, and
    # without totals every answer would be zero usage.
    await conn.execute("TRUNCATE usage_totals")
    await conn.execute("INSERT INTO usage_totals " + aggregator_queries.TOTALS_FROM_BUCKETS)
    print(f"totals: {time.monotonic() - t0:.0f}s", file=sys.stderr)


async def _migrate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        # A database loaded before the loader filled the totals.
        if await conn.fetchval("SELECT NOT EXISTS (SELECT FROM usage_totals)"):
            await fill_totals(conn)
            await conn.execute("VACUUM ANALYZE usage_totals")
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    # 20 s: a process loads each of the 10,000 plans once (its cache), which takes ~15 s of
    # traffic; shorter rounds measure a freshly started server more than a running one.
    parser.add_argument("--seconds", type=int, default=20, help="duration of each wrk run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=2, help="runs per server; the best is kept")
    parser.add_argument("--reuse", action="store_true", help="keep the loaded database")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 1
    admin, bench = urls()
    if args.reuse:
        asyncio.run(_migrate(bench))  # a loaded database from before the latest migration
        key = asyncio.run(_new_key(bench))
    else:
        key = asyncio.run(load(admin, bench, args.customers))
    redis_url = os.environ.get("METER_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "METER_DATABASE_URL": bench,
        "METER_REDIS_URL": redis_url,
        "METER_REDIS_PREFIX": prefix,
        "METER_LOG_LEVEL": "warning",
        "METER_BILLING_JOB_INTERVAL": "0",
    }
    meter_port, base_port = free_port(), free_port()
    baseline_cmd = [sys.executable, str(HERE / "baseline.py"), "--port", str(base_port)]
    meter_cmd = [
        sys.executable,
        "-m",
        "meter",
        "serve",
        "--port",
        str(meter_port),
        "--workers",
        str(args.workers),
    ]
    servers = [
        start([baseline_cmd] * args.workers, base_port, env),
        start([meter_cmd], meter_port, env),
    ]
    best: dict[str, dict[str, float]] = {}
    try:
        for _ in range(args.rounds):
            for name, port in (("baseline", base_port), ("meter", meter_port)):
                wrk(port, args.customers, key, 2)  # warm-up (and the plan cache, partly)
                r = wrk(port, args.customers, key, args.seconds)
                if name not in best or r["p99_ms"] < best[name]["p99_ms"]:
                    best[name] = r
    finally:
        for procs in servers:
            for proc in procs:
                proc.terminate()
                proc.wait(30)
        redis = Redis.from_url(redis_url)
        for k in redis.scan_iter(match=f"{prefix}:*", count=5000):
            redis.delete(k)
        redis.close()
    print(
        f"usage benchmark: {args.customers} customers x {len(METERS)} meters x 720 hourly buckets;"
        f" wrk -t2 -c32, {args.seconds}s, best of {args.rounds}, {args.workers} procs each,"
        f" {os.cpu_count()} cores"
    )
    print(
        f"{'server':>8} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'vs baseline':>11}"
    )
    for name in ("baseline", "meter"):
        r = best[name]
        print(
            f"{name:>8} {r['rps']:>9.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}"
            f" {r['errors']:>6.0f} {r['rps'] / best['baseline']['rps']:>10.2f}x"
        )
    return 0


async def _new_key(bench: str) -> str:
    conn = await asyncpg.connect(bench)
    try:
        return await auth.create_key(conn, name="bench", tenant="bench")
    finally:
        await conn.close()


if __name__ == "__main__":
    raise SystemExit(main())
