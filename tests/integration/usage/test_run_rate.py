"""The usage API's run-rate projection (meter/pricing/runrate.py) with real rollups and pending
events: no extrapolation of a fresh period, and the trailing window's usage read from the hourly
buckets plus the events not aggregated yet."""

from __future__ import annotations

import time
from decimal import Decimal

import asyncpg
from redis.asyncio import Redis

from meter.config import Settings
from meter.pricing import trailing_start
from meter.usage.report import num

from .conftest import HOUR, Client, at, calls, drain, get, post_events, seed_plan


async def _period_began(db: asyncpg.Connection, start: int, end: int) -> None:
    """Move the current period of seed_plan's subscription to start at `start`."""
    await db.execute(
        "UPDATE subscriptions SET current_period_start = $1 WHERE id = 'sub_c-1'", at(start)
    )
    await db.execute("UPDATE subscription_items SET current_period_start = $1", at(start))
    await db.execute(
        "UPDATE subscription_item_periods SET period_start = $1 WHERE period_end = $2",
        at(start),
        at(end),
    )


def _metered(doc: dict[str, object]) -> dict[str, object]:
    [item] = [i for i in doc["items"] if i["subscription_item"] == "si_m_c-1"]  # type: ignore[attr-defined]
    return item  # type: ignore[no-any-return]


async def test_a_period_forty_seconds_old_projects_its_usage_so_far(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    seeded = await seed_plan(db)
    start = int(time.time()) - 40
    await _period_began(db, start, seeded.current[1])
    await post_events(client, api_key, calls("c-1", "fresh", [15], start + 1))
    status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
    assert status == 200, doc
    metered = _metered(doc)
    projection = metered["projection"]
    # Linear over 40 s of a ~29-day month: ~940,000 units.
    assert projection == projection | {  # type: ignore[operator]
        "method": "insufficient_history",
        "quantity": "15",
        "window": None,
        "amount": metered["amount"],
    }


async def test_the_trailing_window_reads_buckets_and_pending_events(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    seeded = await seed_plan(db)
    now = int(time.time())
    start = now - 30 * HOUR  # inside the late window (48 h)
    await _period_began(db, start, seeded.current[1])
    # 10 units in the first hour, outside the trailing window; 80 two hours ago (aggregated)
    # and 40 a minute ago (still pending): the pace rose.
    await post_events(client, api_key, calls("c-1", "old", [6, 4], start + 60))
    await post_events(client, api_key, calls("c-1", "recent", [50, 30], now - 2 * HOUR))
    assert await drain(settings, redis) == 4
    await post_events(client, api_key, calls("c-1", "pending", [25, 15], now - 60))
    status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
    assert status == 200, doc
    assert doc["freshness"]["pending_events"] == 2
    metered = _metered(doc)
    projection: dict[str, object] = metered["projection"]  # type: ignore[assignment]
    assert (metered["quantity"], projection["method"]) == ("130", "trailing_run_rate")
    window = projection["window"]
    assert isinstance(window, dict)
    # The window ends when the answer was computed and starts whole hours back (23 to 24 h).
    assert now <= window["end"] <= doc["freshness"]["as_of"]
    assert window["start"] == trailing_start(window["end"])
    recent = Decimal(80 + 40)  # counted from the events posted, not from the answer
    left = seeded.current[1] - window["end"]
    expected = 130 + recent * left / (window["end"] - window["start"])
    assert projection["quantity"] == num(expected)
    # More than the whole period's average pace would say.
    linear = Decimal(130) * (seeded.current[1] - start) / (window["end"] - start)
    assert Decimal(projection["quantity"]) > linear  # type: ignore[arg-type]
