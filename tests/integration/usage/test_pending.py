"""The pending read against real Redis: exactly one customer's entries, whatever their names."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from meter.config import Settings
from meter.events import UsageEvent
from meter.redis_keys import Keys
from meter.usage import pending

# Names that are substrings of others, need JSON escaping, or are not ASCII.
CUSTOMERS = ["cus_1", "cus_10", "1", 'a"b', "a\\b", "tab\there", "ünï", "🧾", "api_calls"]


async def test_read_pending_returns_exactly_the_wanted_customers_entries(
    redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)
    names = pending.streams(keys, settings.shards)
    now = int(time.time() * 1000)
    events = [
        UsageEvent(tenant, f"e{i}-{j}", customer, "api_calls", "1", now, now, {"c": customer})
        for i, customer in enumerate(CUSTOMERS)
        for j, tenant in enumerate(("acme", "other"))
    ]
    for n, event in enumerate(events):
        await redis.xadd(names[n % len(names)], {"e": event.encode()})

    for wanted in ([c] for c in CUSTOMERS):
        read = await pending.read_pending(redis, names, "acme", wanted)
        got = sorted(e.event.id for e in read.entries)
        assert got == sorted(e.id for e in events if e.tenant == "acme" and e.customer in wanted)
        assert read.scanned == len(events)
    both = await pending.read_pending(redis, names, "other", ["cus_1", "🧾"])
    assert sorted(e.event.customer for e in both.entries) == ["cus_1", "🧾"]
