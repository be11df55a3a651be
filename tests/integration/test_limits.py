"""Hard limits in ingest (meter/limits.py): a blocked (tenant, customer, meter) is refused per
item with `over_limit`, against a real Redis, through the app's own copy of the blocks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
from redis.asyncio import Redis

from meter import auth, limits
from meter.config import Settings
from meter.redis_keys import Keys
from tests.integration.test_ingest import Client, ev, post, stream_events

DAY_MS = 86_400_000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in doc["results"]}


async def _until_status(client: Client, key: str, status: str, **fields: Any) -> int:
    """Post fresh events of `fields` until one is answered `status` (the copy of the blocks is
    refreshed in the background; the test's timeout bounds the wait); how many were posted."""
    n = 0
    while True:
        n += 1
        code, doc = await post(client, key, [ev(f"poll-{time.monotonic_ns()}", **fields)])
        assert code == 200, doc
        if doc["results"][0]["status"] == status:
            return n
        await asyncio.sleep(0.02)


async def test_a_blocked_pair_is_refused_naming_the_rule_and_the_rest_is_accepted(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)
    until = _now_ms() + DAY_MS
    await limits.block(redis, keys, "acme", "cus_1", "api_calls", rule_id="rule_7", until_ms=until)
    status, doc = await post(
        client,
        api_key,
        [
            ev("blocked-1"),
            ev("other-customer", customer="cus_2"),
            ev("other-meter", meter="tokens"),
            ev("blocked-2", value=3),
        ],
    )
    assert status == 200, doc
    results = _by_id(doc)
    for event_id in ("blocked-1", "blocked-2"):
        item = results[event_id]
        assert (item["status"], item["reason"]) == ("rejected", "over_limit"), item
        assert "'rule_7'" in item["message"], item
        assert "'api_calls'" in item["message"], item
    for event_id in ("other-customer", "other-meter"):
        assert results[event_id]["status"] == "accepted"
    assert (doc["accepted"], doc["rejected"]) == (2, 2)
    assert {e.id for e in await stream_events(redis, settings)} == {"other-customer", "other-meter"}


async def test_an_event_after_the_blocks_end_is_the_next_periods_usage(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)
    # The period ends in a minute; an event timestamped after it (within the future tolerance).
    until = _now_ms() + 60_000
    await limits.block(redis, keys, "acme", "cus_1", "api_calls", rule_id="r", until_ms=until)
    status, doc = await post(
        client, api_key, [ev("now"), ev("later", timestamp=(until + 1000) / 1000)]
    )
    assert status == 200, doc
    results = _by_id(doc)
    assert (results["now"]["reason"], results["later"]["status"]) == ("over_limit", "accepted")


async def test_a_cleared_block_accepts_again_and_only_its_rule_clears_it(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)
    until = _now_ms() + DAY_MS
    await limits.block(redis, keys, "acme", "cus_1", "api_calls", rule_id="r1", until_ms=until)
    assert (await post(client, api_key, [ev("a")]))[1]["results"][0]["reason"] == "over_limit"
    assert not await limits.clear(
        redis, keys, "acme", "cus_1", "api_calls", rule_id="r2", until_ms=until
    )
    assert "cus_1\x1fapi_calls" in await limits.blocked(redis, keys, "acme")
    assert await limits.clear(
        redis, keys, "acme", "cus_1", "api_calls", rule_id="r1", until_ms=until
    )
    assert await limits.blocked(redis, keys, "acme") == {}
    await _until_status(client, api_key, "accepted")


async def test_an_expired_block_is_ignored(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)
    await limits.block(
        redis, keys, "acme", "cus_1", "api_calls", rule_id="old", until_ms=_now_ms() - 1
    )
    status, doc = await post(client, api_key, [ev("after-the-period")])
    assert (status, doc["results"][0]["status"]) == (200, "accepted"), doc


async def test_a_block_never_refuses_another_tenants_customer_of_the_same_name(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)
    other = await auth.create_key(db, name="other", tenant="globex")
    await limits.block(
        redis, keys, "acme", "cus_1", "api_calls", rule_id="r", until_ms=_now_ms() + DAY_MS
    )
    _, mine = await post(client, api_key, [ev("x")])
    _, theirs = await post(client, other, [ev("x")])
    assert mine["results"][0]["reason"] == "over_limit"
    assert theirs["results"][0]["status"] == "accepted"


async def test_a_block_set_while_serving_is_enforced_after_a_refresh(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    """Block → first over_limit through the copy each process keeps (limits.REFRESH_S)."""
    keys = Keys(settings.redis_prefix)
    assert (await post(client, api_key, [ev("first")]))[1]["accepted"] == 1  # tenant now kept
    await limits.block(
        redis, keys, "acme", "cus_1", "api_calls", rule_id="late", until_ms=_now_ms() + DAY_MS
    )
    await _until_status(client, api_key, "rejected")
    _, doc = await post(client, api_key, [ev("after")])
    assert doc["results"][0]["reason"] == "over_limit"


async def test_a_late_lift_of_an_earlier_period_keeps_the_next_periods_block(
    redis: Redis, settings: Settings
) -> None:
    """A lift of period 1 arriving after the same rule blocked period 2 deletes nothing."""
    keys = Keys(settings.redis_prefix)
    p1_end, p2_end = _now_ms() - 1, _now_ms() + DAY_MS
    await limits.block(redis, keys, "acme", "cus_1", "api_calls", rule_id="r", until_ms=p2_end)
    assert not await limits.clear(
        redis, keys, "acme", "cus_1", "api_calls", rule_id="r", until_ms=p1_end
    )
    assert await limits.blocked(redis, keys, "acme") == {
        "cus_1\x1fapi_calls": limits.Block("r", p2_end)
    }


async def test_a_late_block_of_an_earlier_period_never_shortens_the_current_one(
    redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)
    p1_end, p2_end = _now_ms() - 1, _now_ms() + DAY_MS
    await limits.block(redis, keys, "acme", "cus_1", "api_calls", rule_id="r", until_ms=p2_end)
    assert not await limits.block(
        redis, keys, "acme", "cus_1", "api_calls", rule_id="r", until_ms=p1_end
    )
    assert await limits.blocked(redis, keys, "acme") == {
        "cus_1\x1fapi_calls": limits.Block("r", p2_end)
    }
    # Another rule's block replaces it, and a later period's block of the same rule extends it.
    later = p2_end + DAY_MS
    assert await limits.block(
        redis, keys, "acme", "cus_1", "api_calls", rule_id="r", until_ms=later
    )
    assert (await limits.blocked(redis, keys, "acme"))["cus_1\x1fapi_calls"].until_ms == later
