"""Dedupe memory benchmark (`make bench-dedupe`): Redis bytes per live dedupe entry, and the
steady-state memory they make at a sustained rate.

Loads N events through the real ingest path (meter.ingest.committer.Committer, which runs
INGEST_SCRIPT: SET NX EX + XADD per event) with unique ids, first with the dedupe window as long
as the late window + 1 h (what every key lived before METER_DEDUPE_WINDOW existed), then with
the default window. Each run then deletes the streams (the aggregator trims them as it folds)
and measures what the dedupe keys hold: `INFO memory` used_memory before and after (dicts,
expiry entries and all) and the mean `MEMORY USAGE` of sampled keys (the key and its value only).
Steady state = rate × key lifetime × bytes per key.

It also measures, memory only, layouts the dedupe could use instead (docs/performance.md,
"Dedupe memory", says why none is adopted): a hash per (shard, minute) holding a 16-byte digest
per event, and string keys named by that digest. And what the MAY_REPEAT_FIELD flag adds to a
stream entry.

Memory, not CPU: it runs its own redis-server (`--redis-server`, default the one `meter dev`
would run; nothing else touches its memory, so INFO deltas are the entries' alone), unless
`--redis-url` names one — then keys go under a per-run prefix and are removed afterwards, and
INFO deltas include whatever else that server does meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from meter.config import Settings
from meter.embedded import free_port, redis_server_binary, wait_for_port
from meter.events import UsageEvent, event_key
from meter.ingest.committer import Committer, Item
from meter.metrics import Metrics
from meter.redis_keys import Keys, may_repeat_forgotten, recent_horizon_ms, shard_of

RATE = 100_000  # events/s of the steady-state figures
BATCH = 1000  # events per commit (a client's batch)
SAMPLE = 2000  # keys whose MEMORY USAGE is averaged


@dataclass(frozen=True, slots=True)
class Measured:
    name: str
    entries: int
    info_bytes: float  # used_memory delta per entry
    usage_bytes: float  # mean MEMORY USAGE per entry (per key, or per hash / its fields)


async def used_memory(redis: Redis) -> int:
    # Freed memory goes back to the allocator lazily; a few reads let the figure settle.
    info = await redis.info("memory")
    return int(info["used_memory"])


async def drop(redis: Redis, pattern: str) -> None:
    async for key in redis.scan_iter(match=pattern, count=10_000):
        await redis.unlink(key)


def make_events(n: int, now_ms: int) -> list[UsageEvent]:
    """Realistic ids (UUIDs, as most clients send) and customers; timestamps 10 minutes old."""
    rng = random.Random(7)
    return [
        UsageEvent(
            "acme",
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            f"cus_{rng.randrange(10_000)}",
            "api_calls",
            "1",
            now_ms - 600_000,
            now_ms,
        )
        for _ in range(n)
    ]


def items(settings: Settings, keys: Keys, events: list[UsageEvent], now_ms: int) -> list[Item]:
    """Each event as the ingest endpoint commits it (meter/ingest/endpoint.py)."""
    horizon = recent_horizon_ms(settings.dedupe_window_s, settings.future_tolerance_s)
    out = []
    for e in events:
        shard = shard_of(e.tenant, e.id, settings.shards)
        flag = int(may_repeat_forgotten(e.timestamp_ms, now_ms, horizon))
        out.append(Item(shard, keys.dedupe(shard, e.tenant, e.id), flag, e.encode()))
    return out


async def commit_all(committer: Committer, batch: list[Item]) -> None:
    for start in range(0, len(batch), BATCH):
        statuses = await committer.commit(batch[start : start + BATCH])
        assert all(statuses), "ids must be new"


async def measure(
    redis: Redis,
    name: str,
    prefix: str,
    n: int,
    load: Callable[[], Awaitable[list[str]]],
    streams: list[str],
) -> Measured:
    """Load, delete the streams, and measure what is left under `prefix`."""
    await drop(redis, f"{prefix}:*")
    before = await used_memory(redis)
    sampled = await load()
    if streams:
        await redis.delete(*streams)
    after = await used_memory(redis)
    sizes = [await redis.memory_usage(key, samples=0) or 0 for key in sampled]
    per = sum(sizes) / len(sizes) if sizes else 0.0
    await drop(redis, f"{prefix}:*")
    return Measured(name, n, (after - before) / n, per)


async def started_committer(redis: Redis, settings: Settings) -> tuple[Keys, Committer]:
    """The ingest committer as `meter serve` builds it for `settings` (its dedupe window),
    started, with no backpressure."""
    keys = Keys(settings.redis_prefix)
    committer = Committer(
        redis,
        keys,
        shards=settings.shards,
        max_events=settings.commit_max_events,
        high_water=10**12,
        metrics=Metrics(),
        dedupe_ttl_s=max(1, math.ceil(settings.dedupe_window_s)),
    )
    await committer.start()
    return keys, committer


async def ingest_layout(
    redis: Redis, base: Settings, window_s: float, n: int, tag: str
) -> Measured:
    settings = base.replace(dedupe_window_s=window_s, redis_prefix=f"{base.redis_prefix}-{tag}")
    keys, committer = await started_committer(redis, settings)
    now_ms = int(time.time() * 1000)
    batch = items(settings, keys, make_events(n, now_ms), now_ms)

    async def load() -> list[str]:
        await commit_all(committer, batch)
        return [item.dedupe_key for item in random.Random(1).sample(batch, min(SAMPLE, n))]

    try:
        streams = [keys.stream(s) for s in range(settings.shards)]
        label = f"string key per event, TTL {window_s / 3600:g} h"
        return await measure(redis, label, settings.redis_prefix, n, load, streams)
    finally:
        await committer.stop()


async def hash_layout(redis: Redis, base: Settings, n: int) -> Measured:
    """One hash per (shard, minute), a 16-byte digest field per event, one EXPIRE per hash."""
    prefix = f"{base.redis_prefix}-hash"
    events = make_events(n, int(time.time() * 1000))
    names = [f"{prefix}:{{s{s:02d}}}:d:m0" for s in range(base.shards)]

    async def load() -> list[str]:
        async with redis.pipeline(transaction=False) as pipe:
            for e in events:
                pipe.hsetnx(
                    names[shard_of(e.tenant, e.id, base.shards)], event_key(e.tenant, e.id), 1
                )
            for name in names:
                pipe.expire(name, 3600)
            await pipe.execute()
        return names

    m = await measure(redis, "hash per (shard, minute), digest fields", prefix, n, load, [])
    # MEMORY USAGE here is per hash: per field it is that over the fields of each hash.
    return Measured(m.name, n, m.info_bytes, m.usage_bytes * len(names) / n)


async def digest_layout(redis: Redis, base: Settings, n: int) -> Measured:
    """String keys named by the 16-byte digest instead of tenant and id (SET NX EX 3600)."""
    prefix = f"{base.redis_prefix}-digest"
    events = make_events(n, int(time.time() * 1000))
    names = [
        f"{prefix}:{{s{shard_of(e.tenant, e.id, base.shards):02d}}}:d:".encode()
        + event_key(e.tenant, e.id)
        for e in events
    ]

    async def load() -> list[str]:
        async with redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.set(name, 1, nx=True, ex=3600)
            await pipe.execute()
        return []  # binary names: sampled below

    m = await measure(redis, "string key named by the digest, TTL 1 h", prefix, n, load, [])
    # measure() dropped the keys: set a sample again to read its MEMORY USAGE.
    sampled = random.Random(1).sample(names, min(SAMPLE, n))
    async with redis.pipeline(transaction=False) as pipe:
        for name in sampled:
            pipe.set(name, 1, nx=True, ex=3600)
        await pipe.execute()
    sizes = [await redis.memory_usage(name, samples=0) or 0 for name in sampled]
    await drop(redis, f"{prefix}:*")
    return Measured(m.name, n, m.info_bytes, sum(sizes) / len(sizes))


async def stream_entry_bytes(redis: Redis, base: Settings, n: int, flagged: str) -> float:
    """Bytes per stream entry (MEMORY USAGE of the streams) with `flagged` entries: "none",
    "all" or "half" (every other event is an hour old, so flagged under the default window)."""
    window = 1.0 if flagged == "all" else base.dedupe_window_s  # 1 s: every event is flagged
    settings = base.replace(dedupe_window_s=window, redis_prefix=f"{base.redis_prefix}-stream")
    keys, committer = await started_committer(redis, settings)
    now_ms = int(time.time() * 1000)
    events = make_events(n, now_ms)
    if flagged == "half":
        events = [
            e._replace(timestamp_ms=now_ms - 3_600_000) if i % 2 else e
            for i, e in enumerate(events)
        ]
    try:
        await commit_all(committer, items(settings, keys, events, now_ms))
    finally:
        await committer.stop()
    total = 0
    for s in range(settings.shards):
        total += await redis.memory_usage(keys.stream(s), samples=0) or 0
    await drop(redis, f"{settings.redis_prefix}:*")
    return total / n


def steady(rate: int, lifetime_s: float, per_entry: float) -> str:
    total = rate * lifetime_s * per_entry
    return f"{total / 1e12:.2f} TB" if total >= 1e12 else f"{total / 1e9:.0f} GB"


async def run(redis: Redis, settings: Settings, n: int) -> None:
    late_plus = settings.late_window_s + 3600.0
    before = await ingest_layout(redis, settings, late_plus, n, "today")
    after = await ingest_layout(redis, settings, settings.dedupe_window_s, n, "window")
    hashed = await hash_layout(redis, settings, n)
    digest = await digest_layout(redis, settings, n)
    entries = {
        flagged: await stream_entry_bytes(redis, settings, min(n, 50_000), flagged)
        for flagged in ("none", "half", "all")
    }

    print(f"{n:,} events, {settings.shards} shards; bytes per live dedupe entry:")
    print(f"  {'layout':<45} {'INFO delta':>10} {'MEMORY USAGE':>13}")
    for m in (before, after, hashed, digest):
        print(f"  {m.name:<45} {m.info_bytes:>10.1f} {m.usage_bytes:>13.1f}")
    print(
        "stream entry (MEMORY USAGE), flagged: "
        + ", ".join(f"{flagged} {size:.1f} B" for flagged, size in entries.items())
    )
    old = RATE * late_plus * before.info_bytes
    new = RATE * settings.dedupe_window_s * after.info_bytes
    print(f"steady state at {RATE:,} events/s (rate x key lifetime x INFO bytes):")
    print(
        f"  keys for the late window + 1 h ({late_plus:,.0f} s): "
        f"{steady(RATE, late_plus, before.info_bytes)}"
    )
    print(
        f"  keys for METER_DEDUPE_WINDOW ({settings.dedupe_window_s:,.0f} s): "
        f"{steady(RATE, settings.dedupe_window_s, after.info_bytes)}"
    )
    print(f"  ratio: {new / old:.2%}")


async def measure_on(url: str, private: bool, settings: Settings, n: int) -> None:
    redis = Redis.from_url(url)
    try:
        version = (await redis.info("server"))["redis_version"]
        print(f"redis {version} at {url}" + (" (private)" if private else ""))
        await run(redis, settings, n)
    finally:
        await drop(redis, f"{settings.redis_prefix}*")
        await redis.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per layout")
    parser.add_argument("--redis-url", help="measure on this Redis instead of a private one")
    parser.add_argument("--redis-server", help="the redis-server binary to run privately")
    args = parser.parse_args()
    settings = Settings(redis_prefix=f"bench-dedupe-{uuid.uuid4().hex[:8]}")
    if args.redis_url:
        asyncio.run(measure_on(args.redis_url, False, settings, args.events))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-dedupe-") as tmp:
        port = free_port()
        binary = args.redis_server or redis_server_binary()
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp]
        command += ["--save", "", "--appendonly", "no"]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            wait_for_port(port)
            asyncio.run(measure_on(f"redis://127.0.0.1:{port}/0", True, settings, args.events))
        finally:
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
