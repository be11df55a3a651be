"""Alert fixtures: a customer on a metered price whose period is chosen by the test (billing rows
inserted straight into Postgres), usage posted through ingest and folded by the aggregator, the
evaluator run in-process or as a process of its own."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from evaluator.worker import Evaluator
from meter.config import Settings
from tests.integration.aggregator.conftest import env_for
from tests.integration.usage.conftest import (
    GRADUATED,
    Client,
    at,
    drain,
    post_events,
    seed_customer,
)

DAY = 86400
__all__ = ["DAY", "Client", "drain", "post_events"]


async def seed(
    db: asyncpg.Connection,
    period: tuple[int, int],
    *,
    external_id: str = "c-1",
    tenant: str = "acme",
    limit: int | None = None,
) -> str:
    """A customer on a monthly subscription with one item: graduated metered price on meter
    `calls` (100 × 2¢, then 0.5¢ + 300 flat) over `period`, with `limit.calls` = `limit`."""
    stripe_id = f"cus_{external_id}"
    if tenant == "acme":
        await seed_customer(db, external_id, stripe_id)
    else:
        await db.execute(
            "INSERT INTO customers (stripe_id, tenant, external_id, event_created)"
            " VALUES ($1, $2, $3, 0)",
            stripe_id,
            tenant,
            external_id,
        )
    await db.execute(
        "INSERT INTO billing_meters (id, event_name, formula, customer_key, value_key, status,"
        " event_created) VALUES ('mtr_calls', 'calls', 'sum', 'stripe_customer_id', 'value',"
        " 'active', 0) ON CONFLICT DO NOTHING"
    )
    price = f"price_{external_id}"
    metadata = {} if limit is None else {"limit.calls": str(limit)}
    await db.execute(
        "INSERT INTO prices (id, product, active, currency, billing_scheme, tiers_mode, tiers,"
        " recurring_interval, recurring_interval_count, usage_type, meter, metadata,"
        " event_created) VALUES ($1, 'prod_1', true, 'usd', 'tiered', 'graduated', $2::jsonb,"
        " 'month', 1, 'metered', 'mtr_calls', $3::jsonb, 0)",
        price,
        orjson.dumps(GRADUATED["tiers"]).decode(),
        orjson.dumps(metadata).decode(),
    )
    sub = f"sub_{external_id}"
    await db.execute(
        "INSERT INTO subscriptions (id, customer, status, currency, current_period_start,"
        " current_period_end, stripe_created, event_created)"
        " VALUES ($1, $2, 'active', 'usd', $3, $4, $3, 0)",
        sub,
        stripe_id,
        at(period[0]),
        at(period[1]),
    )
    item = f"si_{external_id}"
    await db.execute(
        "INSERT INTO subscription_items (id, subscription, price, meter, current_period_start,"
        " current_period_end) VALUES ($1, $2, $3, 'mtr_calls', $4, $5)",
        item,
        sub,
        price,
        at(period[0]),
        at(period[1]),
    )
    await add_period(db, external_id, period)
    return external_id


async def add_period(db: asyncpg.Connection, external_id: str, period: tuple[int, int]) -> None:
    await db.execute(
        "INSERT INTO subscription_item_periods (item, period_start, period_end, meter)"
        " VALUES ($1, $2, $3, 'mtr_calls') ON CONFLICT DO NOTHING",
        f"si_{external_id}",
        at(period[0]),
        at(period[1]),
    )


async def renew(db: asyncpg.Connection, external_id: str, period: tuple[int, int]) -> None:
    """The subscription moves to `period`, as the billing sync records a renewal."""
    await add_period(db, external_id, period)
    for table, key in (("subscriptions", "sub_"), ("subscription_items", "si_")):
        await db.execute(
            f"UPDATE {table} SET current_period_start = $2, current_period_end = $3 WHERE id = $1",
            f"{key}{external_id}",
            at(period[0]),
            at(period[1]),
        )


def calls(customer: str, tag: str, values: list[int], when: float | None = None) -> list[Any]:
    when = time.time() - 60 if when is None else when
    return [
        {"id": f"{tag}-{i}", "customer": customer, "meter": "calls", "value": v, "timestamp": when}
        for i, v in enumerate(values)
    ]


async def create_rule(client: Client, api_key: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/alert_rules",
        data=orjson.dumps(fields),
        headers={"Authorization": f"Bearer {api_key}"},
    )
    doc = await response.json()
    assert response.status == 200, doc
    return dict(doc)


async def webhook_events(db: asyncpg.Connection, type_: str | None = None) -> list[Any]:
    rows = await db.fetch(
        "SELECT id, tenant, type, data FROM webhook_events"
        " WHERE $1::text IS NULL OR type = $1 ORDER BY seq",
        type_,
    )
    return [(r["id"], r["tenant"], r["type"], orjson.loads(r["data"])) for r in rows]


async def evaluate_touches(settings: Settings, redis: Redis) -> int:
    """Read every touch waiting and evaluate it, as a running evaluator would."""
    async with Evaluator(settings, redis=redis) as evaluator:
        await evaluator.ensure_group()
        total = 0
        for _ in range(5):  # a batch holds 100 entries; the tests' flushes make a few
            total += await evaluator.read_touches(block_ms=None)
        return total


async def sweep(settings: Settings, redis: Redis) -> int:
    async with Evaluator(settings, redis=redis) as evaluator:
        return await evaluator.sweep()


async def start_evaluate(settings: Settings, *args: str) -> asyncio.subprocess.Process:
    """`meter evaluate *args` as a process of its own (so that it can be killed -9)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "evaluator", "evaluate", *args,
        env=env_for(settings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
