"""Aggregator benchmark (`make bench-aggregate`): `meter aggregate --once` next to its baselines.

Pre-loads N events (default 1,000,000) into the shard streams with pipelined XADDs of exactly
what ingest writes (`UsageEvent.encode()` in field `e`, one stream per shard by `shard_of`), then
times, each as its own process the way an operator runs it, on a fresh database every time:

- `meter aggregate --once` with the raw log on (METER_RAW_LOG=1, the default) and off;
- the baseline, a plain loop (`--insert-loop`) that reads the same streams 5,000 entries at a
  time (XRANGE), decodes each entry and INSERTs each event into a plain table (no keys, no
  dedupe, no rollups, no checkpoint) with one asyncpg executemany per batch, one transaction per
  batch;
- the limit, the same loop writing each batch with one COPY instead (`--copy-loop`): what
  reading, decoding and storing every event costs at the least, with no per-row statement;
- `meter aggregate --once --processes 2` (raw log on and off): the drain split over two
  processes, each over half of the shards, so that the Python work uses both cores;
- `meter aggregate --once` (raw log on) over the same number of events spread over few and many
  buckets, to show that the rollup cost follows the buckets touched, not the events.

With `--dimensions` it measures dimensions instead (docs/dimensions.md): every event carries
`model` and `region` properties of 10 values each, and the same events are aggregated with no
dimensions declared and with every meter broken down by both keys (up to 100 combinations per
customer, meter and period, under the default guard of 1,000), the values drawn uniformly (the
worst case) and Zipf-like (s = 1.2: a few values dominate), interleaved in one run: each a
cold drain into a fresh database, then the steady state, the same usage under other event ids
into the database the drain left (every bucket and combination known), each in a new process.

Events/s is events / wall time of the process (interpreter start included). The default spread is
"many customers × a few meters × hours inside the late window": 2,000 customers, 3 meters, 90 %
of events in the latest hour and 10 % late, over the 23 hours before it.

Needs Postgres + Redis: METER_DATABASE_URL / METER_REDIS_URL when set, else 127.0.0.1:5432
(database `test`) and 127.0.0.1:6379. It makes its own database `meter_bench_aggregate` (or
`$BENCH_DATABASE`; anew for every run; not `meter_bench`, so that it can run next to `make
bench-ingest`) and Redis key prefixes, and removes its Redis keys afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis import Redis

from meter.config import Settings
from meter.events import UsageEvent
from meter.migrate import migrate
from meter.redis_keys import Keys, shard_of

HERE = Path(__file__).resolve().parent
# BENCH_DATABASE names another database, for runs side by side.
DATABASE = os.environ.get("BENCH_DATABASE", "meter_bench_aggregate")
TENANT = "bench"
HOUR_MS = 3_600_000
READ_BATCH = 5000


@dataclass(frozen=True)
class Spread:
    """How N events spread over buckets: customers × meters × hours (a share of them late)."""

    name: str
    customers: int
    meters: int
    hours: int  # the latest hour plus hours - 1 earlier ones
    late_share: float  # share of events in the earlier hours

    def describe(self) -> str:
        late = f", {self.late_share:.0%} late" if self.hours > 1 else ""
        return f"{self.customers} cust × {self.meters} meters × {self.hours} h{late}"


SPREADS = {
    "realistic": Spread("realistic", customers=2000, meters=3, hours=24, late_share=0.10),
    "few": Spread("few", customers=10, meters=1, hours=1, late_share=0.0),
    "many": Spread("many", customers=20_000, meters=5, hours=24, late_share=0.5),
}
# The realistic spread again, into the database a cold drain of the same usage left (--dimensions).
STEADY = Spread("steady", customers=2000, meters=3, hours=24, late_share=0.10)
METERS = ("api_calls", "tokens", "storage_gb", "seats", "jobs")
VALUES = ("1", "1", "1", "2", "5", "0.25", "12.5", "100")


def database_urls() -> tuple[str, str]:
    """(admin URL, benchmark database URL)."""
    admin = os.environ.get("METER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    bench = urlunsplit(urlsplit(admin)._replace(path=f"/{DATABASE}"))
    return admin, bench


DIMENSION_VALUES = 10
RANKS = range(DIMENSION_VALUES)


def _cumulative(weights: list[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


# How each key's 10 values are drawn (cumulative weights by rank): uniform, the worst case for
# the number of buckets, and Zipf-like with s = 1.2, as "tokens by model" traffic is (a few
# values dominate: the first takes 41 %, the first three 69 %).
ZIPF_S = 1.2
DISTRIBUTIONS = {
    "uniform": _cumulative([1.0] * DIMENSION_VALUES),
    "zipf": _cumulative([1 / (k + 1) ** ZIPF_S for k in RANKS]),
}


def generate(
    spread: Spread,
    n: int,
    shards: int,
    seed: int = 1,
    dimensions: str | None = None,
    id_prefix: str = "evt_",
    now: int | None = None,
) -> list[list[str]]:
    """The stream payloads of n events, per shard, as ingest would have appended them. The same
    seed with another `id_prefix` gives the same usage (customers, meters, times, properties)
    under other event ids, given the same `now` (unix ms; default: the current time).
    `dimensions`: every event carries `model` and `region` values drawn from DISTRIBUTIONS[it],
    from a generator of their own, so the rest of the usage is the same for either one.

    Kept as str (XADD sends the same UTF-8 bytes): a million orjson output buffers held at once
    cost ~3 KB each in memory, an exactly-sized str ~160 bytes."""
    rng = random.Random(seed)
    values = random.Random(seed + 1)
    weights = DISTRIBUTIONS[dimensions] if dimensions else None
    models = [f"m{i}" for i in RANKS]
    regions = [f"r{i}" for i in RANKS]
    now = int(time.time() * 1000) if now is None else now
    latest = now // HOUR_MS * HOUR_MS  # the current hour: events up to now
    per_shard: list[list[str]] = [[] for _ in range(shards)]
    customers = [f"cus_{i:06d}" for i in range(spread.customers)]
    meters = METERS[: spread.meters]
    for _ in range(n):
        event_id = f"{id_prefix}{rng.getrandbits(96):024x}"
        if spread.hours > 1 and rng.random() < spread.late_share:
            hour = latest - rng.randrange(1, spread.hours) * HOUR_MS
            ts = hour + rng.randrange(HOUR_MS)
        else:
            ts = latest + rng.randrange(max(now - latest, 1))
        meter = rng.choice(meters)
        event = UsageEvent(
            tenant=TENANT,
            id=event_id,
            customer=rng.choice(customers),
            meter=meter,
            value=rng.choice(VALUES),
            timestamp_ms=ts,
            received_at_ms=now,
            properties=(
                {
                    "model": values.choices(models, cum_weights=weights)[0],
                    "region": values.choices(regions, cum_weights=weights)[0],
                }
                if weights
                else {"model": rng.choice(("small", "large"))}
                if meter == "tokens"
                else None
            ),
        )
        per_shard[shard_of(TENANT, event_id, shards)].append(event.encode().decode())
    return per_shard


def load(redis: Redis, keys: Keys, per_shard: list[list[str]]) -> float:
    """XADD every payload, pipelined; return the seconds it took."""
    started = time.perf_counter()
    pipe = redis.pipeline(transaction=False)
    queued = 0
    for shard, payloads in enumerate(per_shard):
        stream = keys.stream(shard)
        for payload in payloads:
            pipe.xadd(stream, {"e": payload})
            queued += 1
            if queued == 10_000:
                pipe.execute()
                queued = 0
    pipe.execute()
    return time.perf_counter() - started


def drop_keys(redis: Redis, prefix: str) -> None:
    for key in redis.scan_iter(match=f"{prefix}:*", count=5000):
        redis.delete(key)


async def fresh_database(admin: str, bench: str, dimensions: bool = False) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {DATABASE}")
        # Start every run from a clean slate: no checkpoint of a previous run's WAL lands in it.
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    conn = await asyncpg.connect(bench)
    try:
        await migrate(conn)
        for table in ("bench_insert_loop", "bench_copy_loop"):
            await conn.execute(
                f"CREATE TABLE {table} (tenant text, event_id text, customer text,"
                " meter text, value numeric, event_time timestamptz, received_at timestamptz,"
                " properties jsonb)"
            )
        if dimensions:
            await conn.executemany(
                "INSERT INTO meter_dimensions (tenant, meter, effective_from, keys)"
                " VALUES ($1, $2, 'epoch', '{model,region}')",
                [(TENANT, m) for m in METERS],
            )
    finally:
        await conn.close()


async def rollup_stats(bench: str) -> tuple[int, int, int, int]:
    """(events folded, buckets, bucket upserts, raw events): version counts folds per bucket."""
    conn = await asyncpg.connect(bench)
    try:
        row = await conn.fetchrow(
            "SELECT coalesce(sum(event_count), 0) AS n, count(*) AS buckets,"
            " coalesce(sum(version), 0) AS upserts FROM usage_rollups"
        )
        raw = await conn.fetchval("SELECT count(*) FROM usage_events")
        assert row is not None
        return int(row["n"]), int(row["buckets"]), int(row["upserts"]), int(raw)
    finally:
        await conn.close()


@dataclass
class Result:
    label: str
    spread: str
    events: int
    seconds: float
    load_seconds: float
    buckets: int | None = None
    upserts: int | None = None

    @property
    def eps(self) -> float:
        return self.events / self.seconds


def run_once(
    label: str,
    spread: Spread,
    per_shard: list[list[str]],
    *,
    admin: str,
    bench: str,
    redis: Redis,
    redis_url: str,
    shards: int,
    command: list[str],
    extra_env: dict[str, str],
    fresh: bool = True,
) -> Result:
    """One timed run; `fresh=False` aggregates into the database the previous run left."""
    n = sum(len(p) for p in per_shard)
    if fresh:
        asyncio.run(fresh_database(admin, bench, dimensions="BENCH_DIMENSIONS" in extra_env))
    prefix = f"benchagg{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    env = {
        **os.environ,
        "METER_DATABASE_URL": bench,
        "METER_REDIS_URL": redis_url,
        "METER_REDIS_PREFIX": prefix,
        "METER_SHARDS": str(shards),
        "METER_LOG_LEVEL": "warning",
        **extra_env,
    }
    try:
        load_seconds = load(redis, keys, per_shard)
        started = time.perf_counter()
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if out.returncode != 0:
            raise SystemExit(f"{label} failed ({out.returncode}):\n{out.stderr}")
        # The last line is the total ("aggregated N event(s)"); --processes lists parts first.
        if out.stdout.strip().splitlines()[-1].split()[1] != str(n):
            raise SystemExit(f"{label}: expected {n} events, got: {out.stdout.strip()}")
    finally:
        drop_keys(redis, prefix)
    result = Result(label, spread.name, n, seconds, load_seconds)
    if "--insert-loop" not in command and "--copy-loop" not in command:
        folded, buckets, upserts, raw = asyncio.run(rollup_stats(bench))
        total = n if fresh else n * 2  # a second run adds the same number of events
        expected_raw = 0 if extra_env.get("METER_RAW_LOG") == "0" else total
        if folded != total or raw != expected_raw:
            raise SystemExit(f"{label}: folded {folded}, raw log {raw}; expected {total} events")
        result.buckets, result.upserts = buckets, upserts
    print(
        f"  {label:<34} {spread.name:<9} {result.eps:>10,.0f} events/s  ({seconds:.2f} s;"
        f" XADD load {n / load_seconds:,.0f}/s)",
        flush=True,
    )
    return result


# --- the baselines: a plain INSERT loop and a COPY loop, each its own process ---------------------

INSERT = (
    "INSERT INTO bench_insert_loop (tenant, event_id, customer, meter, value, event_time,"
    " received_at, properties) VALUES ($1, $2, $3, $4, $5, to_timestamp($6 / 1000.0),"
    " to_timestamp($7 / 1000.0), $8)"
)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


COLUMNS = ("tenant", "event_id", "customer", "meter", "value", "event_time", "received_at",
           "properties")  # fmt: skip


async def insert_loop(copy: bool) -> int:
    """Read every shard's stream in batches and INSERT each event (or COPY each batch); return
    how many."""
    import datetime as dt
    from decimal import Decimal

    import orjson
    from redis.asyncio import Redis as AsyncRedis

    settings = Settings.from_env()
    keys = Keys(settings.redis_prefix)
    redis = AsyncRedis.from_url(settings.redis_url)
    conn = await asyncpg.connect(settings.database_url)
    total = 0
    try:
        for shard in range(settings.shards):
            last = "-"
            while True:
                entries = cast(
                    "list[tuple[bytes, dict[bytes, bytes]]]",
                    await redis.xrange(keys.stream(shard), min=last, max="+", count=READ_BATCH),
                )
                if not entries:
                    break
                last = f"({_text(entries[-1][0])}"
                rows: list[tuple[object, ...]] = []
                for _, fields in entries:
                    e = UsageEvent.decode(fields[b"e"])
                    props = orjson.dumps(e.properties).decode() if e.properties else None
                    if copy:  # COPY takes the column types' own values, converted here
                        rows.append(
                            (e.tenant, e.id, e.customer, e.meter, Decimal(e.value),
                             dt.datetime.fromtimestamp(e.timestamp_ms / 1000, dt.UTC),
                             dt.datetime.fromtimestamp(e.received_at_ms / 1000, dt.UTC), props)
                        )  # fmt: skip
                    else:
                        rows.append(
                            (e.tenant, e.id, e.customer, e.meter, e.value, e.timestamp_ms,
                             e.received_at_ms, props)
                        )  # fmt: skip
                async with conn.transaction():
                    if copy:
                        await conn.copy_records_to_table(
                            "bench_copy_loop", records=rows, columns=COLUMNS
                        )
                    else:
                        await conn.executemany(INSERT, rows)
                total += len(rows)
    finally:
        await conn.close()
        await redis.aclose()
    return total


def insert_loop_main(copy: bool) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        total = runner.run(insert_loop(copy))
    print(f"inserted {total} event(s)")
    return 0


# --- main -----------------------------------------------------------------------------------------

# Where `meter aggregate` (raw log on) is among the runs: after the two baselines.
AGGREGATE = 2


def best(results: list[Result], label: str, spread: str) -> Result:
    return min(
        (r for r in results if r.label == label and r.spread == spread), key=lambda r: r.seconds
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events per run")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each measurement")
    parser.add_argument("--shards", type=int, default=Settings().shards, help="METER_SHARDS")
    parser.add_argument(
        "--skip-buckets", action="store_true", help="leave out the few/many buckets runs"
    )
    parser.add_argument(
        "--dimensions", action="store_true", help="measure 2 dimension keys × 10 values instead"
    )
    parser.add_argument("--insert-loop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--copy-loop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.insert_loop or args.copy_loop:
        return insert_loop_main(copy=args.copy_loop)
    if args.dimensions:
        return dimensions_main(args)

    admin, bench = database_urls()
    redis_url = os.environ.get("METER_REDIS_URL", "redis://127.0.0.1:6379/0")
    redis = Redis.from_url(redis_url)
    aggregate = [sys.executable, "-m", "meter", "aggregate", "--once"]
    baseline = [sys.executable, str(Path(__file__).resolve()), "--insert-loop"]
    runs = [
        ("INSERT each event (baseline)", baseline, {}),
        ("COPY each batch (limit)", [*baseline[:-1], "--copy-loop"], {}),
        ("meter aggregate, raw log on", aggregate, {"METER_RAW_LOG": "1"}),
        ("meter aggregate, raw log off", aggregate, {"METER_RAW_LOG": "0"}),
        # Bigger batches fold more events into each bucket upsert (the default B is 20,000).
        ("raw log on, --batch-size 50000", [*aggregate, "--batch-size", "50000"], {}),
        # One Python process folds on one core; a drain can use every core (the baseline: one).
        ("raw log on, --processes 2", [*aggregate, "--processes", "2"], {}),
        ("raw log off, --processes 2", [*aggregate, "--processes", "2"], {"METER_RAW_LOG": "0"}),
    ]
    spreads = ["realistic"] if args.skip_buckets else ["realistic", "few", "many"]
    results: list[Result] = []
    try:
        for name in spreads:
            spread = SPREADS[name]
            print(f"{name}: {spread.describe()}: generating {args.events:,} events", flush=True)
            per_shard = generate(spread, args.events, args.shards)
            todo = runs if name == "realistic" else runs[AGGREGATE : AGGREGATE + 1]
            for _ in range(args.repeat):  # interleaved, so that noise hits every run alike
                for label, command, extra_env in todo:
                    results.append(
                        run_once(
                            label,
                            spread,
                            per_shard,
                            shards=args.shards,
                            command=command,
                            extra_env=extra_env,
                            admin=admin,
                            bench=bench,
                            redis=redis,
                            redis_url=redis_url,
                        )
                    )
            del per_shard
    finally:
        redis.close()

    cores = os.cpu_count()
    print()
    print(
        f"aggregate benchmark: {args.events:,} events per run, {args.shards} shards, batch"
        f" {Settings().aggregator_batch_size:,}, {cores} cores (shared machine), best of"
        f" {args.repeat}"
    )
    base = best(results, runs[0][0], "realistic")
    limit = best(results, runs[1][0], "realistic")
    print(f"{'run':<30} {'spread':<9} {'events/s':>10} {'seconds':>8} {'buckets':>8} "
          f"{'upserts':>8} {'vs INSERT':>10} {'vs COPY':>8}")  # fmt: skip
    rows = [(label, "realistic") for label, _, _ in runs]
    rows += [(runs[AGGREGATE][0], name) for name in spreads if name != "realistic"]
    for label, spread_name in rows:
        r = best(results, label, spread_name)
        buckets = "-" if r.buckets is None else f"{r.buckets:,}"
        upserts = "-" if r.upserts is None else f"{r.upserts:,}"
        print(
            f"{label:<30} {spread_name:<9} {r.eps:>10,.0f} {r.seconds:>8.2f} {buckets:>8} "
            f"{upserts:>8} {r.eps / base.eps:>9.2f}x {r.eps / limit.eps:>7.2f}x"
        )
    print("spreads:")
    for name in spreads:
        print(f"  {name:<9} {SPREADS[name].describe()}")
    print("upserts = bucket rows written across all batches (sum of bucket versions)")
    if "few" in spreads and "many" in spreads:
        label = runs[AGGREGATE][0]
        few, many = best(results, label, "few"), best(results, label, "many")
        assert few.upserts is not None
        assert many.upserts is not None
        per_upsert = (many.seconds - few.seconds) / (many.upserts - few.upserts)
        print(
            f"rollup cost: same {args.events:,} events, {few.upserts:,} vs {many.upserts:,}"
            f" bucket upserts: {few.seconds:.1f} s vs {many.seconds:.1f} s, i.e. ~"
            f"{per_upsert * 1e6:.0f} µs per bucket upsert on top of"
            f" {few.seconds / args.events * 1e6:.1f} µs per event"
        )
    print("events/s: events / wall time of the process, interpreter start-up included")
    return 0


def dimensions_main(args: argparse.Namespace) -> int:
    """The same events aggregated without and with 2 dimension keys × 10 values (uniform and
    Zipf-like), interleaved."""
    admin, bench = database_urls()
    redis_url = os.environ.get("METER_REDIS_URL", "redis://127.0.0.1:6379/0")
    redis = Redis.from_url(redis_url)
    aggregate = [sys.executable, "-m", "meter", "aggregate", "--once"]
    # (label, distribution of the values, environment). The baseline aggregates the uniform
    # events with no dimension declared: the values are only stored, the same bytes either way.
    runs = [
        ("no dimensions", "uniform", {}),
        ("2 keys × 10 values, uniform", "uniform", {"BENCH_DIMENSIONS": "1"}),
        (f"2 keys × 10 values, Zipf {ZIPF_S}", "zipf", {"BENCH_DIMENSIONS": "1"}),
    ]
    spread = SPREADS["realistic"]
    print(f"dimensions: {spread.describe()}: generating 4 × {args.events:,} events", flush=True)
    now = int(time.time() * 1000)
    # Per distribution, the cold drain's events and the same usage under other ids: after the
    # cold drain every combination is known.
    events = {
        (name, fresh): generate(
            spread,
            args.events,
            args.shards,
            dimensions=name,
            id_prefix="evt_" if fresh else "evt_again_",
            now=now,
        )
        for name in DISTRIBUTIONS
        for fresh in (True, False)
    }
    results: list[Result] = []
    rounds: list[dict[tuple[str, bool], float]] = []  # seconds of each (label, cold) of a round
    try:
        for _ in range(args.repeat):
            seconds: dict[tuple[str, bool], float] = {}
            for label, distribution, extra_env in runs:
                for fresh in (True, False):
                    result = run_once(
                        label,
                        spread if fresh else STEADY,
                        events[(distribution, fresh)],
                        shards=args.shards,
                        command=aggregate,
                        extra_env=extra_env,
                        admin=admin,
                        bench=bench,
                        redis=redis,
                        redis_url=redis_url,
                        fresh=fresh,
                    )
                    results.append(result)
                    seconds[(label, fresh)] = result.seconds
            rounds.append(seconds)
    finally:
        redis.close()
    print()
    print(
        f"aggregate with dimensions: {args.events:,} events per run, {args.shards} shards,"
        f" {os.cpu_count()} cores (shared machine), best of {args.repeat}"
    )
    for name in ("realistic", STEADY.name):
        for label, _, _ in runs:
            r = best(results, label, name)
            print(
                f"  {name:<9} {r.label:<28} {r.eps:>10,.0f} events/s {r.seconds:>8.2f} s"
                f" {r.buckets or 0:>9,} buckets {r.upserts or 0:>10,} upserts"
            )
    base = runs[0][0]
    for i, seconds in enumerate(rounds, 1):
        for label, _, _ in runs[1:]:
            print(
                f"round {i}: {label}: {seconds[(label, True)] / seconds[(base, True)]:.2f}x"
                f" the time without (cold), {seconds[(label, False)] / seconds[(base, False)]:.2f}x"
                " (steady)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
