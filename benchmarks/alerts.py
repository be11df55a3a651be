"""Alert latency benchmark (`make bench-alerts`): from an event accepted by ingest to its alert's
webhook_events row and to its delivery at a webhook endpoint, p50 and p99, side by side and as
ratios to the fold's latency in the same run.

One process runs the API, an aggregator, an evaluator and a notifier (real defaults: the
aggregator polls every 0.2 s, the notifier every 1 s when idle), on a fresh database and Redis
prefix, with a local aiohttp receiver registered as the tenant's endpoint for every event type.
N customers (default 200) each get one event of value 10, paced (default 20 events/s) so that the
pipeline is idle between them; a `units` rule for every customer fires at 10. A poller (every
5 ms) notes when each customer's usage first shows in usage_rollups (the baseline: the
aggregator's fold) and when its alert's event row shows in webhook_events; both are measured from
the 200 of the event's POST, by the same poller, so their ratio is that of the two delays, with
the same polling error in each. The receiver notes each delivery when its request arrives (no
polling error: it is timed on receipt, by the same clock).

Needs Postgres (METER_DATABASE_URL when set, else 127.0.0.1:5432, database `test`; it makes its
own database `meter_bench_alerts`, anew every run) and Redis (METER_REDIS_URL, else 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import statistics
import time

import aiohttp
import asyncpg
import orjson
from aiohttp import web

from aggregator.worker import Worker
from evaluator.worker import Evaluator
from meter import auth, wiring
from meter.app import create_app
from meter.config import Settings
from meter.connections import redis_client
from meter.migrate import migrate
from meter.redis_keys import Keys
from meter.webhooks import store as webhooks
from notifier.worker import Notifier

DATABASE = "meter_bench_alerts"
TENANT = "bench"
POLL_S = 0.005


def database_urls() -> tuple[str, str]:
    admin = os.environ.get("METER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    base, _, _ = admin.rpartition("/")
    return admin, f"{base}/{DATABASE}"


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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def watch(
    conn: asyncpg.Connection,
    folded: dict[str, float],
    alerted: dict[str, float],
    delivered: dict[str, float],
    n: int,
    stop: asyncio.Event,
) -> None:
    while (len(alerted) < n or len(delivered) < n) and not stop.is_set():
        now = time.perf_counter()
        for r in await conn.fetch(
            "SELECT DISTINCT customer FROM usage_rollups WHERE tenant = $1", TENANT
        ):
            folded.setdefault(r["customer"], now)
        for r in await conn.fetch(
            "SELECT data->>'customer' AS customer FROM webhook_events WHERE tenant = $1", TENANT
        ):
            alerted.setdefault(r["customer"], now)
        await asyncio.sleep(POLL_S)


async def start_receiver(delivered: dict[str, float]) -> tuple[web.AppRunner, str]:
    """A webhook endpoint noting when each customer's alert first arrives (a redelivery keeps
    the first time)."""

    async def hook(request: web.Request) -> web.Response:
        now = time.perf_counter()
        event = orjson.loads(await request.read())
        delivered.setdefault(event["data"]["customer"], now)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"


async def main(n: int, rate: float) -> None:
    admin, bench = database_urls()
    await fresh_database(admin, bench)
    settings = Settings.from_env().replace(
        database_url=bench,
        redis_prefix=f"bench-alerts-{os.getpid()}",
        port=0,
        metrics_port=0,
        notifier_private_urls=True,  # the receiver is local
    )
    conn = await asyncpg.connect(bench)
    key = await auth.create_key(conn, name="bench", tenant=TENANT)
    await conn.execute(
        "INSERT INTO alert_rules (id, tenant, customer, meter, kind, thresholds)"
        " VALUES ('alr_bench', $1, NULL, 'calls', 'units', '{10}')",
        TENANT,
    )
    delivered: dict[str, float] = {}
    receiver, hook_url = await start_receiver(delivered)
    await webhooks.create(conn, TENANT, hook_url, ["*"], dt.datetime.now(dt.UTC))
    redis = redis_client(settings.redis_url)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    accepted: dict[str, float] = {}
    folded: dict[str, float] = {}
    alerted: dict[str, float] = {}
    try:
        async with (
            Worker(settings, redis, attributor=wiring.attributor()) as aggregator,
            Evaluator(settings, redis=redis) as evaluator,
            Notifier(settings) as notifier,
            aiohttp.ClientSession() as http,
        ):
            tasks = [
                asyncio.create_task(aggregator.run(stop, scheduled_jobs=False)),
                asyncio.create_task(evaluator.run(stop)),
                asyncio.create_task(notifier.run(stop)),
                asyncio.create_task(watch(conn, folded, alerted, delivered, n, stop)),
            ]
            await asyncio.sleep(1.0)  # leases taken, consumer group made
            for i in range(n):
                customer = f"c-{i}"
                event = {"id": f"e-{i}", "customer": customer, "meter": "calls", "value": 10}
                async with http.post(
                    f"http://127.0.0.1:{port}/v1/events",
                    data=orjson.dumps([event]),
                    headers={"Authorization": f"Bearer {key}"},
                ) as response:
                    assert response.status == 200, await response.text()
                accepted[customer] = time.perf_counter()
                await asyncio.sleep(1 / rate)
            # The watcher returns once every alert is seen and delivered.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(tasks[-1]), 120)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await runner.cleanup()
        await receiver.cleanup()
        pattern = Keys(settings.redis_prefix).pattern()
        leftovers = [k async for k in redis.scan_iter(pattern)]
        if leftovers:
            await redis.delete(*leftovers)
        await redis.aclose()
        await conn.close()
    fold = [folded[c] - t for c, t in accepted.items() if c in folded]
    alert = [alerted[c] - t for c, t in accepted.items() if c in alerted]
    delivery = [delivered[c] - t for c, t in accepted.items() if c in delivered]
    print(f"{n} events, one a customer, {rate:g}/s; poll every {POLL_S * 1000:g} ms")
    print("| from accepted to | n | p50 ms | p99 ms | p50 / fold | p99 / fold |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, values in (
        ("usage_rollups row (fold)", fold),
        ("webhook_events row", alert),
        ("delivery at the endpoint", delivery),
    ):
        if not values:
            print(f"| {name} | 0 | - | - | - | - |")
            continue
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        ratios = "- | -"
        if fold:
            ratios = f"{p50 / percentile(fold, 0.5):.2f} | {p99 / percentile(fold, 0.99):.2f}"
        print(f"| {name} | {len(values)} | {p50 * 1000:.0f} | {p99 * 1000:.0f} | {ratios} |")
    for later, earlier, text in (
        (alerted, folded, "alert row after its fold"),
        (delivered, alerted, "delivery after its alert row"),
    ):
        behind = [later[c] - earlier[c] for c in accepted if c in later and c in earlier]
        if behind:
            print(f"{text}: median {statistics.median(behind) * 1000:.0f} ms")
    if len(alert) < n:
        print(f"MISSING: {n - len(alert)} alert(s) not seen within 120 s")
    if len(delivery) < n:
        print(f"MISSING: {n - len(delivery)} delivery(ies) not received within 120 s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    args = parser.parse_args()
    asyncio.run(main(args.customers, args.rate))
