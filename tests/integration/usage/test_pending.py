"""The pending read against real Redis: exactly one customer's entries, whatever their names,
and one read shared by concurrent requests without losing read-your-writes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from meter.config import Settings
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


class FaultyRedis(Redis):
    """A real client that counts its XREADs and can be told to fail the next one, or to hold
    the next one in flight once Redis has answered it (so that a test can act meanwhile)."""

    xreads = 0
    fail_next = False
    hold_next = False
    answered: asyncio.Event
    release: asyncio.Event

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        self.xreads += 1
        if self.fail_next:
            self.fail_next = False
            raise RedisConnectionError("injected")
        result = await super().xread(*args, **kwargs)
        if self.hold_next:
            self.hold_next = False
            self.answered.set()
            await self.release.wait()
        return result


@pytest.fixture
async def faulty(settings: Settings) -> AsyncIterator[FaultyRedis]:
    client = FaultyRedis.from_url(settings.redis_url)
    client.answered, client.release = asyncio.Event(), asyncio.Event()
    yield client
    await client.aclose()


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
    async with pending.PendingReads(redis, names) as reads:
        for wanted in ([c] for c in CUSTOMERS):
            read = await reads.read("acme", wanted)
            got = sorted(e.event.id for e in read.entries)
            assert got == sorted(
                e.id for e in events if e.tenant == "acme" and e.customer in wanted
            )
            assert read.scanned == len(events)
        both = await reads.read("other", ["cus_1", "🧾"])
    assert sorted(e.event.customer for e in both.entries) == ["cus_1", "🧾"]


async def test_concurrent_requests_share_one_read(
    redis: Redis, faulty: FaultyRedis, settings: Settings
) -> None:
    names = names_of(settings)
    for n, customer in enumerate(CUSTOMERS):
        await redis.xadd(names[n % len(names)], {"e": event(customer, f"e{n}").encode()})

    async with pending.PendingReads(faulty, names) as reads:
        results = await asyncio.gather(*(reads.read("acme", [c]) for c in CUSTOMERS * 3))

    assert faulty.xreads == 1
    for customer, read in zip(CUSTOMERS * 3, results, strict=True):
        assert [e.event.customer for e in read.entries] == [customer]


async def test_a_request_never_joins_a_read_sent_before_it_arrived(
    redis: Redis, faulty: FaultyRedis, settings: Settings
) -> None:
    names = names_of(settings)
    faulty.hold_next = True
    async with asyncio.timeout(10), pending.PendingReads(faulty, names) as reads:
        first = asyncio.create_task(reads.read("acme", ["cus_1"]))
        await faulty.answered.wait()  # the first read has its answer, not yet delivered
        await redis.xadd(names[0], {"e": event("cus_1", "accepted-meanwhile").encode()})
        second = asyncio.create_task(reads.read("acme", ["cus_1"]))
        await asyncio.sleep(0)  # the second request is waiting: it must not take the first read
        faulty.release.set()
        assert (await first).entries == []
        # Accepted before the second request arrived: it must see it.
        assert [e.event.id for e in (await second).entries] == ["accepted-meanwhile"]
    assert faulty.xreads == 2


async def test_one_request_going_away_does_not_cancel_the_others_read(
    redis: Redis, settings: Settings
) -> None:
    names = names_of(settings)
    await redis.xadd(names[0], {"e": event("cus_1", "e1").encode()})
    async with pending.PendingReads(redis, names) as reads:
        leaving = asyncio.create_task(reads.read("acme", ["cus_1"]))
        staying = asyncio.create_task(reads.read("acme", ["cus_1"]))
        await asyncio.sleep(0)
        leaving.cancel()
        assert [e.event.id for e in (await staying).entries] == ["e1"]


async def test_a_failed_read_fails_its_waiters_and_the_next_read_succeeds(
    redis: Redis, faulty: FaultyRedis, settings: Settings
) -> None:
    names = names_of(settings)
    await redis.xadd(names[0], {"e": event("cus_1", "e1").encode()})
    faulty.fail_next = True
    async with asyncio.timeout(10), pending.PendingReads(faulty, names) as reads:
        results = await asyncio.gather(
            *(reads.read("acme", ["cus_1"]) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, RedisConnectionError) for r in results)
        assert [e.event.id for e in (await reads.read("acme", ["cus_1"])).entries] == ["e1"]


async def test_stopping_the_reader_leaves_no_request_waiting(
    faulty: FaultyRedis, settings: Settings
) -> None:
    faulty.hold_next = True
    async with pending.PendingReads(faulty, names_of(settings)) as reads:
        in_flight = asyncio.create_task(reads.read("acme", ["cus_1"]))
        await faulty.answered.wait()
        queued = asyncio.create_task(reads.read("acme", ["cus_1"]))
        await asyncio.sleep(0)
    # The app stopped (its cleanup left the block): both requests end, none hangs.
    done, _ = await asyncio.wait({in_flight, queued}, timeout=10)
    assert done == {in_flight, queued}
    assert in_flight.cancelled()
    assert queued.cancelled()
