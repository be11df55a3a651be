"""Ingest benchmark (`make bench-ingest`): `meter serve` next to a bare aiohttp baseline.

Both servers run on this machine in the same run; wrk drives each at 32 connections with single
events and batches of 100 and 1,000 (unique ids, so every event is really deduplicated and
appended). Prints requests/s, events/s, p50/p99 and the ratio to the baseline, first with one
process each, then with `--workers` processes each (default: one per core).

Needs wrk (Debian: `apt-get install wrk`), and Postgres + Redis: METER_DATABASE_URL /
METER_REDIS_URL when set, else 127.0.0.1:5432 (database `test`) and 127.0.0.1:6379. It makes
its own database `meter_bench` (anew each run) and Redis key prefix, and removes its Redis keys
afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
from redis import Redis

from meter import auth
from meter.embedded import free_port, wait_for_port
from meter.limits import REFRESH_S, field
from meter.migrate import migrate
from meter.redis_keys import Keys

HERE = Path(__file__).resolve().parent
SIZES = (1, 100, 1000)


def database_urls() -> tuple[str, str]:
    """(admin URL, benchmark database URL)."""
    admin = os.environ.get("METER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    bench = urlunsplit(urlsplit(admin)._replace(path="/meter_bench"))
    return admin, bench


async def prepare_database(admin: str, bench: str) -> str:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute("DROP DATABASE IF EXISTS meter_bench WITH (FORCE)")
        await conn.execute("CREATE DATABASE meter_bench")
    finally:
        await conn.close()
    conn = await asyncpg.connect(bench)
    try:
        await migrate(conn)
        return await auth.create_key(conn, name="bench", tenant="bench")
    finally:
        await conn.close()


def start(cmds: list[list[str]], port: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for cmd in cmds
    ]
    wait_for_port(port)
    time.sleep(1)  # let every process bind and warm up
    return procs


def wrk(
    port: int, batch: int, key: str, seconds: int, tag: str, threads: int = 2
) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk", f"-t{threads}", "-c32", f"-d{seconds}s", "--latency",
            "-s", str(HERE / "events.lua"),
            f"http://127.0.0.1:{port}/v1/events", "--", str(batch), key, tag,
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    doc = orjson.loads(line.removeprefix("RESULT "))
    seconds_run = doc["duration_us"] / 1e6
    return {
        "rps": doc["requests"] / seconds_run,
        "eps": doc["requests"] * batch / seconds_run,
        "p50_ms": doc["p50_us"] / 1000,
        "p99_ms": doc["p99_us"] / 1000,
        "errors": doc["errors"] + doc["non2xx"],
    }


def measure(
    workers: int, key: str, seconds: int, env: dict[str, str], sizes: list[int], threads: int
) -> dict[tuple[str, int], dict[str, float]]:
    """Run every batch size against a baseline and a meter with `workers` processes each."""
    meter_port, base_port = free_port(), free_port()
    baseline_cmd = [sys.executable, str(HERE / "baseline.py"), "--port", str(base_port)]
    meter_cmd = [sys.executable, "-m", "meter", "serve", "--port", str(meter_port)]
    servers = {
        "baseline": start([baseline_cmd] * workers, base_port, env),
        "meter": start([[*meter_cmd, "--workers", str(workers)]], meter_port, env),
    }
    ports = {"baseline": base_port, "meter": meter_port}
    results: dict[tuple[str, int], dict[str, float]] = {}
    try:
        for batch in sizes:
            for name in ("baseline", "meter"):
                wrk(ports[name], batch, key, 2, f"warm{uuid.uuid4().hex[:6]}", threads)  # warm-up
                tag = uuid.uuid4().hex[:8]
                results[name, batch] = wrk(ports[name], batch, key, seconds, tag, threads)
                time.sleep(1)
    finally:
        for procs in servers.values():
            for proc in procs:
                proc.terminate()
                proc.wait(30)
    return results


def _set_blocks(redis: Redis, prefix: str, count: int) -> None:
    """`count` hard-limit blocks of tenant `bench` (meter/limits.py) on customers wrk never
    sends: every event pays the lookup, none is refused, so the work is otherwise the same."""
    key = Keys(prefix).limits("bench")
    redis.delete(key)
    if count:
        until = int(time.time() * 1000) + 86_400_000
        value = orjson.dumps({"rule": "bench", "until_ms": until})
        redis.hset(key, mapping={field(f"blocked_{n}", "api_calls"): value for n in range(count)})
    time.sleep(2 * REFRESH_S + 0.5)  # every process's copy refreshed


def _post_one(port: int, key: str, customer: str) -> str:
    body = orjson.dumps({"id": uuid.uuid4().hex, "customer": customer, "meter": "api_calls"})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/events",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(orjson.loads(answer.read())["results"][0].get("reason", "accepted"))


def enforcement_latency(redis: Redis, prefix: str, port: int, key: str) -> tuple[float, float]:
    """Seconds from `block` to the first `over_limit`, and to 20 in a row (every process's copy
    refreshed; requests go to any process)."""
    customer = f"lat_{uuid.uuid4().hex[:6]}"
    _post_one(port, key, customer)  # the tenant is in every copy already (wrk ran)
    started = time.perf_counter()
    until = int(time.time() * 1000) + 86_400_000
    value = orjson.dumps({"rule": "latency", "until_ms": until})
    redis.hset(Keys(prefix).limits("bench"), field(customer, "api_calls"), value)
    first, streak = 0.0, 0
    while streak < 20:
        if _post_one(port, key, customer) == "over_limit":
            first = first or time.perf_counter() - started
            streak += 1
        else:
            streak = 0
        time.sleep(0.005)
    return first, time.perf_counter() - started


def measure_limits(
    workers: int, key: str, seconds: int, env: dict[str, str], sizes: list[int], rounds: int
) -> tuple[dict[int, list[tuple[float, float]]], list[tuple[float, float]]]:
    """Per batch size and round, (req/s without blocks, with 1,000 blocks) of one `meter serve`,
    the two interleaved in alternating order; and the enforcement latency of each round."""
    port = free_port()
    prefix = env["METER_REDIS_PREFIX"]
    redis = Redis.from_url(env["METER_REDIS_URL"])
    procs = start(
        [[sys.executable, "-m", "meter", "serve", "--port", str(port), "--workers", str(workers)]],
        port,
        env,
    )
    ratios: dict[int, list[tuple[float, float]]] = {batch: [] for batch in sizes}
    latencies: list[tuple[float, float]] = []
    try:
        for n in range(rounds):
            for batch in sizes:
                # Alternating which goes first (the streams grow, the machine's load drifts).
                order = (0, 1000) if n % 2 == 0 else (1000, 0)
                rps = {}
                for blocks in order:
                    _set_blocks(redis, prefix, blocks)
                    wrk(port, batch, key, 2, f"warm{uuid.uuid4().hex[:6]}")
                    rps[blocks] = wrk(port, batch, key, seconds, uuid.uuid4().hex[:8])["rps"]
                ratios[batch].append((rps[0], rps[1000]))
            _set_blocks(redis, prefix, 0)
            latencies.append(enforcement_latency(redis, prefix, port, key))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        redis.close()
    return ratios, latencies


def lookup_cost(rounds: int) -> list[tuple[float, float]]:
    """Per round, ns per event of the over_limit check with 1,000 blocks none of the events hits
    (meter/ingest/endpoint.py `_refuse_blocked`) and of validating the same events: in-process,
    interleaved, a CPU ratio the machine's load does not skew as it skews wrk's."""
    from meter.config import Settings
    from meter.ingest.endpoint import _CUSTOMER, _refuse_blocked
    from meter.ingest.validation import Limits, validate
    from meter.limits import Block, TenantBlocks

    limits = Limits.from_settings(Settings())
    now_ms = int(time.time() * 1000)
    raws = [
        orjson.loads(orjson.dumps({"id": f"e{i}", "customer": f"cus_{i % 997}", "meter": "m"}))
        for i in range(1000)
    ]
    blocked = TenantBlocks.of(
        {field(f"blocked_{n}", "m"): Block("r", now_ms + 86_400_000) for n in range(1000)}
    )
    events = [validate(r, tenant="t", now_ms=now_ms, limits=limits) for r in raws]
    items: list[Any] = [None] * len(events)
    slots = list(range(len(events)))
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(100):
            for raw in raws:
                validate(raw, tenant="t", now_ms=now_ms, limits=limits)
        t1 = time.perf_counter_ns()
        for _ in range(100):
            # As the endpoint does: the events are looked up only if a customer has a block.
            if not blocked.customers.isdisjoint(map(_CUSTOMER, events)):
                _refuse_blocked(blocked.fields, now_ms, items, events, slots, [], {})  # type: ignore[arg-type]
        t2 = time.perf_counter_ns()
        out.append(((t2 - t1) / 100_000, (t1 - t0) / 100_000))
    return out


def report_limits(
    ratios: dict[int, list[tuple[float, float]]], latencies: list[tuple[float, float]]
) -> None:
    print("hard limits: meter serve without blocks vs with 1,000 blocks of the tenant")
    print(f"{'batch':>5} {'round':>5} {'req/s none':>10} {'req/s 1000':>10} {'ratio':>6}")
    for batch, rounds in ratios.items():
        for n, (none, some) in enumerate(rounds):
            print(f"{batch:>5} {n:>5} {none:>10.0f} {some:>10.0f} {some / none:>6.3f}")
    for first, all_ in latencies:
        print(f"enforcement latency: first over_limit {first:.3f} s, 20 in a row {all_:.3f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="batch sizes, comma-separated"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--limits",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="instead: ingest with and without hard-limit blocks, ROUNDS interleaved rounds",
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 1
    admin, bench = database_urls()
    key = asyncio.run(prepare_database(admin, bench))
    redis_url = os.environ.get("METER_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "METER_DATABASE_URL": bench,
        "METER_REDIS_URL": redis_url,
        "METER_REDIS_PREFIX": prefix,
        "METER_LOG_LEVEL": "warning",
        # One key sends everything: its per-key rate limit (10,000 requests/s by default) would
        # cap the measurement; raised out of reach, it is still checked on every request.
        "METER_INGEST_RATE_LIMIT": "100000000",
        "METER_INGEST_RATE_BURST": "100000000",
        # Nothing drains the streams during a benchmark: let them grow.
        "METER_STREAM_HIGH_WATER": "100000000",
    }
    configs = sorted({1, args.workers})
    try:
        if args.limits:
            for check, valid in lookup_cost(args.limits):
                print(f"per event: over_limit check {check:.0f} ns, validation {valid:.0f} ns")
            ratios, latencies = measure_limits(
                args.workers, key, args.seconds, env, sizes, args.limits
            )
            report_limits(ratios, latencies)
            return 0
        runs = {
            workers: measure(workers, key, args.seconds, env, sizes, args.threads)
            for workers in configs
        }
    finally:
        redis = Redis.from_url(redis_url)
        batch: list[bytes] = []
        for k in redis.scan_iter(match=f"{prefix}:*", count=5000):
            batch.append(k)
            if len(batch) >= 5000:
                redis.unlink(*batch)
                batch.clear()
        if batch:
            redis.unlink(*batch)
        redis.close()

    print(
        f"ingest benchmark: wrk -t{args.threads} -c32, {args.seconds}s per run, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'procs':>5} {'batch':>5} {'server':>8} {'req/s':>9} {'events/s':>10} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'errors':>6} {'vs baseline':>11}"
    )
    for workers, results in runs.items():
        for batch in sizes:
            base = results["baseline", batch]
            for name in ("baseline", "meter"):
                r = results[name, batch]
                print(
                    f"{workers:>5} {batch:>5} {name:>8} {r['rps']:>9.0f} {r['eps']:>10.0f} "
                    f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['errors']:>6.0f} "
                    f"{r['rps'] / base['rps']:>10.2f}x"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
