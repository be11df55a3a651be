"""Amounts never overflow an answer: a batch of events of the largest value ingest takes, early in
a period (once it is old enough to be extrapolated), projects a run-rate amount past 2^63 minor
units; the answer carries it as a decimal string, exact, and every amount in the signed 64-bit
range stays a JSON integer."""

from __future__ import annotations

import time
from decimal import Decimal

import asyncpg
import jsonschema
import orjson
from redis.asyncio import Redis

from meter.config import Settings
from meter.openapi.usage import SCHEMAS

from .conftest import Client, at, drain, get, post_events, seed_plan

INT64_MAX = 2**63 - 1


async def test_a_projection_past_int64_is_a_decimal_string_not_a_500(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    seeded = await seed_plan(db)
    # The current period began 5 hours ago (past its minimum history, 0.5 % of ~29 days): the
    # run rate multiplies by ~140.
    start = int(time.time()) - 5 * 3600
    end = seeded.current[1]
    await db.execute(
        "UPDATE subscriptions SET current_period_start = $1 WHERE id = 'sub_c-1'", at(start)
    )
    await db.execute("UPDATE subscription_items SET current_period_start = $1", at(start))
    await db.execute(
        "UPDATE subscription_item_periods SET period_start = $1 WHERE period_end = $2",
        at(start),
        at(end),
    )
    event = {"customer": "c-1", "meter": "calls", "value": 999999999999999}
    big = [event | {"id": f"big-{n}", "timestamp": start + 1 + n} for n in range(200)]
    await post_events(client, api_key, big)
    for pending in (True, False):  # still in the stream, then folded into the rollups
        if not pending:
            assert await drain(settings, redis) == 200
        status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
        assert status == 200, doc
        [metered] = [i for i in doc["items"] if i["subscription_item"] == "si_m_c-1"]
        assert metered["quantity"] == str(200 * 999999999999999)
        assert metered["projection"]["method"] == "trailing_run_rate"
        projected = metered["projection"]["amount"]
        assert isinstance(projected, str), projected
        assert int(projected) > INT64_MAX
        # The exact amount, as the engine computed it: (quantity x rate) in cents.
        rate = Decimal(metered["projection"]["quantity"])
        assert rate > Decimal(200 * 999999999999999) * 100
        assert isinstance(metered["amount"], int)  # within int64: still an integer
        total = doc["projected_invoice"]["total"]
        assert isinstance(total, str)
        assert int(total) > INT64_MAX
        # The answer is what the OpenAPI document says an amount is.
        for amount in (projected, metered["amount"], total, doc["invoice"]["total"]):
            jsonschema.validate(amount, SCHEMAS["Amount"])


def test_orjson_cannot_write_such_an_integer() -> None:
    """Why the representation is needed at all (orjson writes 64-bit integers only)."""
    try:
        orjson.dumps(2**64)
    except orjson.JSONEncodeError:
        return
    raise AssertionError("orjson wrote an integer past 64 bits")
