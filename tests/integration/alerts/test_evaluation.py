"""Alert evaluation end to end: usage posted through ingest, folded by the aggregator, evaluated
from its touches or by the sweep; each crossing gives exactly one webhook event."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import orjson
from redis.asyncio import Redis

from evaluator.worker import Evaluator
from meter.config import Settings
from meter.limits import field
from meter.redis_keys import Keys
from tests.integration.alerts.conftest import (
    DAY,
    Client,
    calls,
    create_rule,
    drain,
    evaluate_touches,
    post_events,
    renew,
    seed,
    sweep,
    webhook_events,
)


def current_period(elapsed_days: float = 1, days: int = 30) -> tuple[int, int]:
    start = int(time.time() - elapsed_days * DAY)
    return start, start + days * DAY


async def test_crossing_80_percent_fires_one_event_with_its_data(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    period = current_period()
    await seed(db, period, limit=1000)
    rule = await create_rule(
        client, api_key, meter="calls", kind="percent_of_limit", thresholds=[50, 80, 100]
    )
    await post_events(client, api_key, calls("c-1", "a", [300, 250]))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    fired = await webhook_events(db)
    assert [(e[2], e[3]["threshold"]) for e in fired] == [("usage.threshold_crossed", "50")]
    # 850 of 1000 after a second fold, by the customer's other key: 80 fires, once.
    await post_events(client, api_key, calls("cus_c-1", "b", [200, 100]))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    await evaluate_touches(settings, redis)
    await sweep(settings, redis)
    crossed = [e for e in await webhook_events(db) if e[3]["threshold"] == "80"]
    assert len(crossed) == 1
    _, tenant, type_, data = crossed[0]
    assert (tenant, type_) == ("acme", "usage.threshold_crossed")
    assert data == {
        "rule": rule["id"],
        "customer": "c-1",
        "meter": "calls",
        "kind": "percent_of_limit",
        "threshold": "80",
        "value": "85",
        "usage": "850",
        "limit": "1000",
        "period": {"start": period[0], "end": period[1]},
    }
    assert len(await webhook_events(db)) == 2  # 50 and 80; 100 not reached
    status, states = await _get(client, api_key, f"/v1/alert_rules/{rule['id']}/states")
    assert status == 200
    [state] = states["data"]
    assert (state["customer"], state["value"], state["blocked"]) == ("c-1", "85", False)
    assert [c["threshold"] for c in state["crossed"]] == ["50", "80"]


async def test_two_evaluators_at_once_fire_once(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    await seed(db, current_period())
    await seed(db, current_period(), external_id="c-2")
    await create_rule(client, api_key, meter="calls", kind="units", thresholds=[10, 20, 30])
    await create_rule(client, api_key, meter="calls", kind="amount", thresholds=[50, 250])
    await post_events(client, api_key, calls("c-1", "a", [25]) + calls("c-2", "b", [40]))
    await drain(settings, redis)
    async with Evaluator(settings) as one, Evaluator(settings) as two:
        for _ in range(3):
            await asyncio.gather(one.sweep(), two.sweep(), one.sweep(), two.sweep())
    fired = await webhook_events(db)
    # units: c-1 (25) crosses 10 and 20, c-2 (40) all three; amount at 2¢ a unit: c-1 50¢
    # and c-2 80¢ cross 50, neither 250.
    subjects = sorted((e[3]["customer"], e[3]["kind"], e[3]["threshold"]) for e in fired)
    assert subjects == [
        ("c-1", "amount", "50"),
        ("c-1", "units", "10"),
        ("c-1", "units", "20"),
        ("c-2", "amount", "50"),
        ("c-2", "units", "10"),
        ("c-2", "units", "20"),
        ("c-2", "units", "30"),
    ]
    assert len({e[0] for e in fired}) == len(fired)
    firings = await db.fetchval("SELECT count(*) FROM alert_firings")
    assert firings == len(fired)


async def test_amount_is_the_meter_line_priced_by_the_engine(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    await seed(db, current_period())
    await create_rule(client, api_key, meter="calls", kind="amount", thresholds=[200, 500, 1000])
    # Graduated: 100 units × 2 = 200, then 0.5 each + a 300 flat fee: 200 units → 550.
    await post_events(client, api_key, calls("c-1", "a", [200]))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    fired = await webhook_events(db)
    assert sorted(e[3]["threshold"] for e in fired) == ["200", "500"]
    assert {e[3]["value"] for e in fired} == {"550"}
    assert {e[3]["currency"] for e in fired} == {"usd"}


async def test_a_rule_created_above_its_threshold_fires_once(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    await seed(db, current_period())
    await post_events(client, api_key, calls("c-1", "a", [70]))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)  # no rule yet: nothing
    assert await webhook_events(db) == []
    await create_rule(client, api_key, customer="c-1", meter="calls", kind="units", thresholds=[50])
    assert await sweep(settings, redis) == 1
    assert await sweep(settings, redis) == 0
    assert len(await webhook_events(db)) == 1


async def test_a_new_period_re_arms_the_rule(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    now = int(time.time())
    old = (now - 31 * DAY, now - DAY)
    new = (now - DAY, now + 29 * DAY)
    await seed(db, old)
    await create_rule(client, api_key, meter="calls", kind="units", thresholds=[100])
    await post_events(client, api_key, calls("c-1", "a", [150], when=now - DAY - 3600))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    await renew(db, "c-1", new)
    await sweep(settings, redis)  # the new period has no usage yet
    assert [e[3]["period"]["start"] for e in await webhook_events(db)] == [old[0]]
    await post_events(client, api_key, calls("c-1", "b", [120]))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    await sweep(settings, redis)
    fired = await webhook_events(db)
    assert [(e[3]["period"]["start"], e[3]["usage"]) for e in fired] == [
        (old[0], "150"),
        (new[0], "120"),
    ]


async def test_projection_fires_on_a_rising_run_rate(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    # Half of a 30-day period elapsed. The projection adds the trailing day's rate (the last 23
    # whole hours and the current one) times the time left to the usage so far.
    start, end = current_period(elapsed_days=15)
    await seed(db, (start, end))
    await create_rule(client, api_key, meter="calls", kind="projected", thresholds=[1000])
    # 400 26 hours ago (before the trailing day), nothing since: no rate, 400 at the end.
    await post_events(client, api_key, calls("c-1", "a", [400], when=time.time() - 26 * 3600))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    assert await webhook_events(db) == []
    # 200 in the last minute: the rate of the trailing day rises from 0.
    await post_events(client, api_key, calls("c-1", "b", [200]))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    await sweep(settings, redis)
    now = time.time()
    fired = await webhook_events(db)
    assert [(e[2], e[3]["threshold"], e[3]["usage"]) for e in fired] == [
        ("usage.projected_to_exceed", "1000", "600")
    ]
    window = 23 * 3600 + now % 3600  # from the start of the hour 23 hours back to now
    expected = 600 + 200 * (end - now) / window  # ~3,600 to ~3,800
    assert abs(float(fired[0][3]["value"]) - expected) < 0.01 * expected


async def test_hard_limit_blocks_then_a_new_period_clears(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    now = int(time.time())
    old = (now - 31 * DAY, now - DAY)
    new = (now - DAY, now + 29 * DAY)
    await seed(db, old)
    rule = await create_rule(
        client, api_key, meter="calls", kind="units", thresholds=[100, 500], hard_limit=True
    )
    await post_events(client, api_key, calls("c-1", "a", [300], when=now - DAY - 3600))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    limits = Keys(settings.redis_prefix).limits("acme")
    assert await redis.hgetall(limits) == {}  # 100 crossed, not the limit
    await post_events(client, api_key, calls("c-1", "b", [250], when=now - DAY - 3600))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    held = await redis.hgetall(limits)
    assert set(held) == {field(k, "calls").encode() for k in ("c-1", "cus_c-1")}
    for value in held.values():
        assert orjson.loads(value) == {"rule": rule["id"], "until_ms": old[1] * 1000}
    reached = await webhook_events(db, "usage.limit_reached")
    assert [(e[3]["customer"], e[3]["blocked_until"]) for e in reached] == [("c-1", old[1])]
    await renew(db, "c-1", new)
    await sweep(settings, redis)
    await sweep(settings, redis)
    assert await redis.hgetall(limits) == {}
    cleared = await webhook_events(db, "usage.limit_cleared")
    assert [(e[3]["period"]["start"], e[3]["reason"]) for e in cleared] == [(old[0], "new_period")]
    assert len(await webhook_events(db, "usage.limit_reached")) == 1


async def test_a_block_lost_after_the_commit_is_asserted_again(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    await seed(db, current_period())
    await create_rule(
        client, api_key, meter="calls", kind="units", thresholds=[10], hard_limit=True
    )
    await post_events(client, api_key, calls("c-1", "a", [20]))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    limits = Keys(settings.redis_prefix).limits("acme")
    await redis.delete(limits)  # as if the evaluator died between its commit and Redis
    await sweep(settings, redis)
    assert len(await redis.hgetall(limits)) == 2
    assert len(await webhook_events(db, "usage.limit_reached")) == 1


async def test_tenants_never_see_each_others_usage_rules_or_states(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    from meter import auth

    other_key = await auth.create_key(db, name="other", tenant="other")
    await seed(db, current_period())
    rule = await create_rule(client, api_key, meter="calls", kind="units", thresholds=[10])
    # The other tenant's customer of the same id uses far more: acme's rule must not fire.
    await post_events(client, other_key, calls("c-1", "o", [500]))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    await sweep(settings, redis)
    assert await webhook_events(db) == []
    for method, path in (
        ("GET", f"/v1/alert_rules/{rule['id']}"),
        ("GET", f"/v1/alert_rules/{rule['id']}/states"),
        ("POST", f"/v1/alert_rules/{rule['id']}"),
        ("DELETE", f"/v1/alert_rules/{rule['id']}"),
    ):
        response = await client.request(
            method,
            path,
            data=b'{"thresholds": [5]}' if method == "POST" else None,
            headers={"Authorization": f"Bearer {other_key}"},
        )
        assert response.status == 404, (method, path)
    status, listed = await _get(client, other_key, "/v1/alert_rules")
    assert (status, listed["data"]) == (200, [])
    # acme's own usage fires acme's rule, under acme only.
    await post_events(client, api_key, calls("c-1", "a", [20]))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    assert [(e[1], e[3]["rule"]) for e in await webhook_events(db)] == [("acme", rule["id"])]


async def _get(client: Client, key: str, path: str) -> tuple[int, dict[str, object]]:
    response = await client.get(path, headers={"Authorization": f"Bearer {key}"})
    return response.status, await response.json()


async def test_a_dimension_filter_counts_only_its_combination(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    await seed(db, current_period())
    response = await client.put(
        "/v1/meters/calls/dimensions",
        data=orjson.dumps({"dimensions": ["model"]}),
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status == 200, await response.text()
    rule = await create_rule(
        client, api_key, meter="calls", kind="units", thresholds=[100], filter={"model": "large"}
    )
    assert rule["filter"] == {"model": "large"}
    now = time.time() + 1  # after the dimensions take effect

    def used(tag: str, model: str, value: int) -> list[dict[str, object]]:
        return [e | {"properties": {"model": model}} for e in calls("c-1", tag, [value], now)]

    await post_events(client, api_key, used("s", "small", 500) + used("l1", "large", 60))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    assert await webhook_events(db) == []  # 560 on the meter, 60 of them large
    await post_events(client, api_key, used("l2", "large", 50))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    fired = await webhook_events(db)
    assert [(e[3]["usage"], e[3]["filter"]) for e in fired] == [("110", {"model": "large"})]
