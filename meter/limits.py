"""Blocking a customer's meter at a hard limit, as ingest enforcement reads it (docs/alerts.md).

One Redis hash per tenant (`Keys.limits`): field "customer US meter" → {"rule", "until_ms"}.
Both calls are idempotent, so the evaluator asserts a block again after every evaluation while
its limit stands, and a crash between its commit and these calls is repaired on the next one.
"""

from __future__ import annotations

import orjson

from meter.connections import RedisClient
from meter.redis_keys import CLEAR_LIMIT_SCRIPT, Keys


def field(customer: str, meter: str) -> str:
    return f"{customer}\x1f{meter}"


async def block(
    redis: RedisClient,
    keys: Keys,
    tenant: str,
    customer: str,
    meter: str,
    *,
    rule_id: str,
    until_ms: int,
) -> None:
    """Block `meter` for `customer` until `until_ms` (the end of the billing period)."""
    doc = orjson.dumps({"rule": rule_id, "until_ms": until_ms})
    await redis.hset(keys.limits(tenant), field(customer, meter), doc)


async def clear(
    redis: RedisClient, keys: Keys, tenant: str, customer: str, meter: str, *, rule_id: str
) -> bool:
    """Lift the block `rule_id` set (another rule's block on the same meter stays)."""
    cleared = await redis.eval(
        CLEAR_LIMIT_SCRIPT, 1, keys.limits(tenant), field(customer, meter), rule_id
    )
    return bool(cleared)
