"""Hard limits lifted by the evaluator: a deleted rule's block, a hard limit turned off, a lift
lost after the commit or undone by a late block; and a sweep that goes on past a failure."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from evaluator import worker
from evaluator.fire import Rule
from evaluator.worker import Evaluator
from meter import limits
from meter.alerts import store
from meter.config import Settings
from meter.core import touches
from meter.redis_keys import Keys
from tests.integration.alerts.conftest import (
    DAY,
    Client,
    calls,
    create_rule,
    drain,
    evaluate_touches,
    post_events,
    seed,
    sweep,
    webhook_events,
)


def current_period() -> tuple[int, int]:
    start = int(time.time() - DAY)
    return start, start + 30 * DAY


async def blocked_rules(redis: Redis, settings: Settings) -> set[str]:
    held = await redis.hgetall(Keys(settings.redis_prefix).limits("acme"))
    return {orjson.loads(v)["rule"] for v in held.values()}


async def reach_limit(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> dict[str, Any]:
    await seed(db, current_period())
    rule = await create_rule(
        client, api_key, meter="calls", kind="units", thresholds=[10], hard_limit=True
    )
    await post_events(client, api_key, calls("c-1", "a", [20]))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    assert await blocked_rules(redis, settings) == {rule["id"]}
    return rule


async def test_a_deleted_rules_block_lost_after_the_delete_is_lifted_by_the_sweep(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    rule = await reach_limit(client, api_key, db, redis, settings)
    held = await store.delete(db, "acme", rule["id"])  # and killed before its Redis lift
    assert len(held) == 1
    assert await blocked_rules(redis, settings) == {rule["id"]}
    await sweep(settings, redis)
    assert await blocked_rules(redis, settings) == set()
    cleared = await webhook_events(db, "usage.limit_cleared")
    assert [(e[3]["rule"], e[3]["reason"]) for e in cleared] == [(rule["id"], "rule_deleted")]
    # An evaluator that read the rule before the delete blocks late: the next sweep lifts it.
    until_ms = int(held[0]["period_end"].timestamp()) * 1000
    await limits.block(
        redis, Keys(settings.redis_prefix), "acme", "c-1", "calls", rule_id=rule["id"],
        until_ms=until_ms,
    )  # fmt: skip
    await sweep(settings, redis)
    assert await blocked_rules(redis, settings) == set()
    assert len(await webhook_events(db, "usage.limit_cleared")) == 1


async def test_the_api_delete_lifts_at_once(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    rule = await reach_limit(client, api_key, db, redis, settings)
    response = await client.delete(
        f"/v1/alert_rules/{rule['id']}", headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status == 200
    assert await blocked_rules(redis, settings) == set()


async def test_an_evaluation_that_read_a_rule_before_its_delete_never_blocks(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    await seed(db, current_period())
    doc = await create_rule(
        client, api_key, meter="calls", kind="units", thresholds=[10], hard_limit=True
    )
    await post_events(client, api_key, calls("c-1", "a", [20]))
    await drain(settings, redis)
    await store.delete(db, "acme", doc["id"])
    rule = Rule(doc["id"], "acme", None, "calls", "units", (Decimal(10),), True)
    async with Evaluator(settings, redis=redis) as evaluator, evaluator.pool.acquire() as conn:
        assert await evaluator._evaluate(conn, [rule], "c-1") == 0
    assert await blocked_rules(redis, settings) == set()
    assert await db.fetchval("SELECT count(*) FROM alert_limits") == 0


async def test_turning_the_hard_limit_off_lifts_the_block(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    rule = await reach_limit(client, api_key, db, redis, settings)
    response = await client.post(
        f"/v1/alert_rules/{rule['id']}",
        data=orjson.dumps({"hard_limit": False}),
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status == 200
    await sweep(settings, redis)
    assert await blocked_rules(redis, settings) == set()
    await sweep(settings, redis)
    assert await blocked_rules(redis, settings) == set()
    cleared = await webhook_events(db, "usage.limit_cleared")
    assert [e[3]["reason"] for e in cleared] == ["hard_limit_off"]


async def test_a_sweep_goes_on_past_a_customer_that_fails(
    client: Client,
    api_key: str,
    db: asyncpg.Connection,
    redis: Redis,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await seed(db, current_period(), external_id="c-1")
    await seed(db, current_period(), external_id="c-2")
    await create_rule(client, api_key, meter="calls", kind="units", thresholds=[10])
    await post_events(client, api_key, calls("c-1", "a", [20]) + calls("c-2", "b", [20]))
    await drain(settings, redis)
    real = Evaluator._evaluate

    async def failing(self: Evaluator, conn: Any, rule_list: Any, key: str) -> int:
        if key in ("c-1", "cus_c-1"):
            raise ValueError("a bad customer")
        return await real(self, conn, rule_list, key)

    monkeypatch.setattr(Evaluator, "_evaluate", failing)
    async with Evaluator(settings, redis=redis) as evaluator:
        await evaluator.sweep()
        assert evaluator.metrics.errors._value.get() >= 1
    assert [e[3]["customer"] for e in await webhook_events(db)] == ["c-2"]


async def test_the_sweep_runs_when_taking_over_stale_touches_fails(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Evaluator) -> int:
        raise ValueError("unexpected")

    monkeypatch.setattr(Evaluator, "claim_stale", broken)
    async with Evaluator(settings, redis=redis) as evaluator:
        await evaluator._sweep_round()
        assert evaluator.metrics.last_sweep._value.get() > 0
        assert evaluator.metrics.errors._value.get() == 1


async def test_a_round_failing_unexpectedly_keeps_the_loop_running(
    redis: Redis, settings: Settings
) -> None:
    stop = asyncio.Event()
    rounds = 0

    async def step() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise ValueError("unexpected")
        stop.set()

    async with Evaluator(settings, redis=redis) as evaluator:
        await evaluator._loop(stop, step, 0.0)
        assert (rounds, evaluator.metrics.errors._value.get()) == (2, 1)


async def test_a_touch_delivered_too_often_is_dead_lettered(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "CLAIM_IDLE_MS", 0)
    evaluated = 0

    async def unreachable(self: Evaluator, tenant: str, key: str, meters: list[str]) -> int:
        nonlocal evaluated
        evaluated += 1
        raise ConnectionError("as if each evaluator died on it")

    monkeypatch.setattr(Evaluator, "evaluate_touch", unreachable)
    stream = Keys(settings.redis_prefix).alert_touches()
    async with Evaluator(settings, redis=redis, consumer="a") as evaluator:
        await evaluator.ensure_group()
        await touches.publish(redis, evaluator.keys, [("acme", "c-1", "calls")])
        with pytest.raises(ConnectionError):
            await evaluator.read_touches(block_ms=None)  # delivery 1
        for _ in range(worker.MAX_DELIVERIES - 1):  # deliveries 2..5
            with pytest.raises(ConnectionError):
                await evaluator.claim_stale()
        assert evaluated == worker.MAX_DELIVERIES
        await evaluator.claim_stale()  # delivery 6: acknowledged unevaluated
        assert evaluated == worker.MAX_DELIVERIES
        assert evaluator.metrics.dead_lettered._value.get() == 1
    assert (await redis.xpending(stream, worker.GROUP))["pending"] == 0


async def test_a_limit_recorded_under_the_customers_other_key_is_cleared_in_a_new_period(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    """Usage sent under the `cus_` id before the billing sync linked it: the limit of that
    period was recorded under that name, and the next period clears it all the same."""
    start, end = current_period()
    await seed(db, (start, end))
    rule = await create_rule(
        client, api_key, meter="calls", kind="units", thresholds=[10], hard_limit=True
    )
    await db.execute(
        "INSERT INTO alert_limits (rule, tenant, customer, keys, meter, period_start, period_end)"
        " VALUES ($1, 'acme', 'cus_c-1', '{cus_c-1}', 'calls', to_timestamp($2),"
        " to_timestamp($3))",
        rule["id"],
        start - 30 * DAY,
        start,
    )
    await sweep(settings, redis)
    cleared = await webhook_events(db, "usage.limit_cleared")
    assert [(e[3]["customer"], e[3]["reason"]) for e in cleared] == [("cus_c-1", "new_period")]
    assert await db.fetchval("SELECT count(*) FROM alert_limits WHERE cleared_at IS NULL") == 0


async def test_taking_over_stale_touches_pages_through_all_of_them(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "CLAIM_IDLE_MS", 0)
    seen: list[str] = []

    async def evaluate(self: Evaluator, tenant: str, key: str, meters: list[str]) -> int:
        seen.append(key)
        return 0

    monkeypatch.setattr(Evaluator, "evaluate_touch", evaluate)
    stream = Keys(settings.redis_prefix).alert_touches()
    n = worker.TOUCH_BATCH + worker.TOUCH_BATCH // 2
    async with Evaluator(settings, redis=redis, consumer="b") as evaluator:
        await evaluator.ensure_group()
        for i in range(n):
            await touches.publish(redis, evaluator.keys, [("acme", f"c-{i}", "calls")])
        # Read by an evaluator that died before acknowledging.
        await redis.xreadgroup(worker.GROUP, "dead", {stream: ">"}, count=n)
        await evaluator.claim_stale()
    assert sorted(seen) == sorted(f"c-{i}" for i in range(n))
    assert (await redis.xpending(stream, worker.GROUP))["pending"] == 0
