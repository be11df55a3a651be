"""The pending read against real Redis: exactly one customer's entries, whatever their names,
and one read shared by concurrent requests without losing read-your-writes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from meter.config import Settings
from meter.embedded import free_port
from meter.events import UsageEvent
from meter.redis_keys import Keys
from meter.usage import pending

# Names that are substrings of others, need JSON escaping, or are not ASCII.
CUSTOMERS = ["cus_1", "cus_10", "1", 'a"b', "a\\b", "tab\there", "ünï", "🧾", "api_calls"]


def event(customer: str, event_id: str, tenant: str = "acme") -> UsageEvent:
    now = int(time.time() * 1000)
    return UsageEvent(tenant, event_id, customer, "api_calls", "1", now, now, {"c": customer})


def names_of(settings: Settings) -> list[str]:
    return pending.streams(Keys(settings.redis_prefix), settings.shards)


async def xread_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_xread", {}).get("calls", 0))


async def test_a_read_returns_exactly_the_wanted_customers_entries(
    redis: Redis, settings: Settings
) -> None:
    names = names_of(settings)
    events = [
        event(customer, f"e{i}-{j}", tenant)
        for i, customer in enumerate(CUSTOMERS)
        for j, tenant in enumerate(("acme", "other"))
    ]
    for n, e in enumerate(events):
        await redis.xadd(names[n % len(names)], {"e": e.encode()})
    reads = pending.PendingReads(redis, names)

    for wanted in ([c] for c in CUSTOMERS):
        read = await reads.read("acme", wanted)
        got = sorted(e.event.id for e in read.entries)
        assert got == sorted(e.id for e in events if e.tenant == "acme" and e.customer in wanted)
        assert read.scanned == len(events)
    both = await reads.read("other", ["cus_1", "🧾"])
    assert sorted(e.event.customer for e in both.entries) == ["cus_1", "🧾"]


async def test_concurrent_requests_share_one_read(redis: Redis, settings: Settings) -> None:
    names = names_of(settings)
    for n, customer in enumerate(CUSTOMERS):
        await redis.xadd(names[n % len(names)], {"e": event(customer, f"e{n}").encode()})
    reads = pending.PendingReads(redis, names)
    before = await xread_calls(redis)

    results = await asyncio.gather(*(reads.read("acme", [c]) for c in CUSTOMERS * 3))

    assert await xread_calls(redis) - before == 1
    for customer, read in zip(CUSTOMERS * 3, results, strict=True):
        assert [e.event.customer for e in read.entries] == [customer]


class HeldRedis(Redis):
    """A real client whose first XREAD, once Redis has answered, waits for `release`: a read
    held in flight, so that a test can act while it is."""

    answered: asyncio.Event
    release: asyncio.Event

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().xread(*args, **kwargs)
        if not self.answered.is_set():
            self.answered.set()
            await self.release.wait()
        return result


async def test_a_request_never_joins_a_read_sent_before_it_arrived(
    redis: Redis, settings: Settings
) -> None:
    names = names_of(settings)
    held = HeldRedis.from_url(settings.redis_url)
    held.answered, held.release = asyncio.Event(), asyncio.Event()
    try:
        reads = pending.PendingReads(held, names)
        first = asyncio.create_task(reads.read("acme", ["cus_1"]))
        await held.answered.wait()  # the first read has its answer, not yet delivered
        await redis.xadd(names[0], {"e": event("cus_1", "accepted-meanwhile").encode()})
        second = asyncio.create_task(reads.read("acme", ["cus_1"]))
        await asyncio.sleep(0.05)  # let the second request wait (it must not take the first)
        held.release.set()
        assert (await first).entries == []
        # Accepted before the second request arrived: it must see it.
        assert [e.event.id for e in (await second).entries] == ["accepted-meanwhile"]
    finally:
        await held.aclose()


async def test_one_request_going_away_does_not_cancel_the_others_read(
    redis: Redis, settings: Settings
) -> None:
    names = names_of(settings)
    await redis.xadd(names[0], {"e": event("cus_1", "e1").encode()})
    reads = pending.PendingReads(redis, names)
    leaving = asyncio.create_task(reads.read("acme", ["cus_1"]))
    staying = asyncio.create_task(reads.read("acme", ["cus_1"]))
    await asyncio.sleep(0)
    leaving.cancel()
    assert [e.event.id for e in (await staying).entries] == ["e1"]


async def test_a_failed_read_fails_its_waiters_and_the_next_read_tries_again(
    settings: Settings,
) -> None:
    down = Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        reads = pending.PendingReads(down, names_of(settings))
        results = await asyncio.gather(
            *(reads.read("acme", ["cus_1"]) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, RedisConnectionError) for r in results)
        with pytest.raises(RedisConnectionError):
            await reads.read("acme", ["cus_1"])
    finally:
        await down.aclose()
