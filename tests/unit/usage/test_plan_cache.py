"""PlanCache's rules, with a loader standing in for the Postgres read (no I/O here)."""

from __future__ import annotations

import asyncio
from typing import Any

from meter.usage.plans import ALL, PlanCache
from meter.usage.store import Plan


def plan_of(customer: str, status: str = "active") -> Plan:
    return Plan(f"ext-{customer}", customer, "sub_1", status, ())


class Loader:
    """Answers from `self.status`; counts reads; can be held mid-read."""

    def __init__(self) -> None:
        self.status = "active"
        self.reads = 0
        self.hold: asyncio.Event | None = None
        self.reading = asyncio.Event()

    async def __call__(self, _conn: Any, _tenant: str, key: str) -> Plan:
        self.reads += 1
        answer = plan_of(key, self.status)  # what the database held when the read ran
        self.reading.set()
        if self.hold is not None:
            await self.hold.wait()
        return answer


def cache_with(loader: Loader) -> PlanCache:
    cache = PlanCache(load=loader)
    cache.set_listening(True)
    return cache


async def test_an_entry_is_served_until_its_customer_is_named() -> None:
    loader = Loader()
    cache = cache_with(loader)
    await cache.plan(None, "t", "cus_1")  # type: ignore[arg-type]
    await cache.plan(None, "t", "cus_2")  # type: ignore[arg-type]
    await cache.plan(None, "t", "cus_1")  # type: ignore[arg-type]
    assert loader.reads == 2
    cache.changed("cus_1")
    await cache.plan(None, "t", "cus_1")  # type: ignore[arg-type]
    await cache.plan(None, "t", "cus_2")  # type: ignore[arg-type]
    assert loader.reads == 3
    cache.changed(ALL)
    await cache.plan(None, "t", "cus_2")  # type: ignore[arg-type]
    assert loader.reads == 4


async def test_a_read_overtaken_by_a_change_is_not_kept() -> None:
    """The read saw the old plan; the change's notification came before the read returned."""
    loader = Loader()
    cache = cache_with(loader)
    loader.hold = asyncio.Event()
    first = asyncio.create_task(cache.plan(None, "t", "cus_1"))  # type: ignore[arg-type]
    await loader.reading.wait()
    loader.status = "canceled"
    cache.changed("cus_1")
    loader.hold.set()
    assert (await first).status == "active"  # this request answers from its own read
    assert (await cache.plan(None, "t", "cus_1")).status == "canceled"  # type: ignore[arg-type]


async def test_losing_or_regaining_the_listener_drops_everything() -> None:
    loader = Loader()
    cache = cache_with(loader)
    await cache.plan(None, "t", "cus_1")  # type: ignore[arg-type]
    cache.set_listening(False)
    await cache.plan(None, "t", "cus_1")  # type: ignore[arg-type]
    cache.set_listening(True)
    await cache.plan(None, "t", "cus_1")  # type: ignore[arg-type]
    assert loader.reads == 3


async def test_without_a_listener_entries_expire_after_the_short_ttl() -> None:
    loader = Loader()
    cache = PlanCache(load=loader, ttl_s=0.0, listening_ttl_s=3600.0)
    await cache.plan(None, "t", "cus_1")  # type: ignore[arg-type]
    await cache.plan(None, "t", "cus_1")  # type: ignore[arg-type]
    assert loader.reads == 2
    cache.set_listening(True)
    await cache.plan(None, "t", "cus_1")  # type: ignore[arg-type]
    await cache.plan(None, "t", "cus_1")  # type: ignore[arg-type]
    assert loader.reads == 3
