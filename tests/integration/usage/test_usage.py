"""GET /v1/customers/{id}/usage against real Postgres and Redis: events posted through ingest,
folded by the aggregator (or still pending in the streams), priced by the engine."""

from __future__ import annotations

import time
from decimal import Decimal

import asyncpg
from redis.asyncio import Redis

from meter.config import Settings
from meter.pricing import Period, SubscriptionItem, line_amount, project_invoice

from .conftest import (
    FLAT,
    GRADUATED,
    HOUR,
    Client,
    calls,
    d,
    drain,
    engine_price,
    get,
    post_events,
    seed_customer,
    seed_plan,
)


def _item(doc: dict[str, object], item: str) -> dict[str, object]:
    found = [i for i in doc["items"] if i["subscription_item"] == item]  # type: ignore[attr-defined]
    assert len(found) == 1, doc
    return found[0]  # type: ignore[no-any-return]


async def test_current_usage_is_priced_by_the_engine_and_includes_pending_events(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    seeded = await seed_plan(db)
    recent = int(time.time()) - 2 * HOUR
    # Named by our id and by the Stripe id: both are the customer's usage.
    await post_events(client, api_key, calls("c-1", "a", [40, 60, 50], recent))
    await post_events(client, api_key, calls(seeded.stripe_id, "b", [7], recent))
    # Usage of the previous period (an hour before the boundary) must not show as current.
    await post_events(client, api_key, calls("c-1", "old", [20], seeded.current[0] - HOUR))
    assert await drain(settings, redis) == 5

    status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
    assert status == 200, doc
    grad, flat = engine_price(GRADUATED), engine_price(FLAT)
    metered = _item(doc, "si_m_c-1")
    assert (metered["quantity"], metered["pricing_model"]) == ("157", "tiered_graduated")
    assert metered["amount"] == line_amount(grad, Decimal(157)) == 200 + 300 + 29  # 28.5 rounds up
    assert metered["period"] == {"start": seeded.current[0], "end": seeded.current[1]}
    assert metered["projection"]["method"] == "trailing_run_rate"  # type: ignore[index]
    licensed = _item(doc, "si_f_c-1")
    assert (licensed["quantity"], licensed["amount"]) == ("3", 6000)
    items = [SubscriptionItem(grad, id="si_m_c-1"), SubscriptionItem(flat, 3, id="si_f_c-1")]
    period = Period(*seeded.current)
    expected = project_invoice(items, {"si_m_c-1": Decimal(157)}, period=period)
    invoice = doc["invoice"]
    assert (invoice["subtotal"], invoice["total"], invoice["currency"]) == (
        expected.subtotal,
        expected.total,
        "usd",
    )
    assert [line["amount"] for line in invoice["lines"]] == [529, 6000]
    assert doc["freshness"]["pending_included"] is True
    assert doc["freshness"]["pending_events"] == 0

    # Accepted but not aggregated: counted at once, in the right period.
    await post_events(client, api_key, calls("c-1", "c", [43], recent))
    await post_events(client, api_key, calls("c-1", "old2", [5], seeded.current[0] - HOUR))
    status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
    metered = _item(doc, "si_m_c-1")
    assert (metered["quantity"], metered["pending_events"]) == ("200", 1)
    assert metered["amount"] == line_amount(grad, Decimal(200))
    assert doc["freshness"]["pending_events"] == 2  # both of the customer's pending events
    assert doc["invoice"]["subtotal"] == line_amount(grad, Decimal(200)) + 6000

    # Once aggregated: the same total, now from the rollups (counted once, not twice).
    assert await drain(settings, redis) == 2
    status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
    metered = _item(doc, "si_m_c-1")
    assert (metered["quantity"], metered["pending_events"]) == ("200", 0)


async def test_pending_events_at_or_before_the_checkpoint_are_not_counted_twice(
    client: Client, api_key: str, db: asyncpg.Connection, redis_url: str, settings: Settings
) -> None:
    await seed_plan(db)
    await post_events(client, api_key, calls("c-1", "a", [10, 5], int(time.time()) - HOUR))
    # A crash between the aggregator's commit and its XTRIM leaves folded entries in the
    # stream: the checkpoint, not the stream, must decide what is pending.
    untrimmed = Redis.from_url(redis_url)

    async def no_trim(*args: object, **kwargs: object) -> int:
        return 0

    untrimmed.xtrim = no_trim  # type: ignore[method-assign]
    try:
        assert await drain(settings, untrimmed) == 2
        lengths = [
            await untrimmed.xlen(f"{settings.redis_prefix}:{{s{s:02d}}}:events") for s in range(4)
        ]
    finally:
        await untrimmed.aclose()
    assert sum(lengths) == 2  # still in the streams, and folded
    status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
    assert status == 200, doc
    assert _item(doc, "si_m_c-1")["quantity"] == "15"
    assert doc["freshness"]["pending_events"] == 0


async def test_previous_period_and_a_period_by_instant(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    seeded = await seed_plan(db)
    await post_events(client, api_key, calls("c-1", "old", [120], seeded.current[0] - HOUR))
    await post_events(client, api_key, calls("c-1", "new", [3], int(time.time()) - HOUR))
    assert await drain(settings, redis) == 2
    grad = engine_price(GRADUATED)
    for query in ("previous", str(seeded.previous[0] + 5 * HOUR)):
        status, doc = await get(client, api_key, f"/v1/customers/c-1/usage?period={query}")
        assert status == 200, doc
        metered = _item(doc, "si_m_c-1")
        assert metered["period"] == {"start": seeded.previous[0], "end": seeded.previous[1]}
        assert metered["quantity"] == "120"
        assert metered["amount"] == line_amount(grad, Decimal(120))
        # A closed period projects to what was used.
        assert metered["projection"]["amount"] == metered["amount"]  # type: ignore[index]
    status, doc = await get(client, api_key, "/v1/customers/c-1/usage?period=2001-01-01")
    assert (status, doc["error"]["param"]) == (404, "period")


async def test_unknown_customer_is_404_and_bad_period_is_400(client: Client, api_key: str) -> None:
    status, doc = await get(client, api_key, "/v1/customers/nobody/usage")
    assert status == 404
    assert (doc["error"]["type"], doc["error"]["param"]) == ("not_found", "id")
    status, doc = await get(client, api_key, "/v1/customers/nobody/usage?period=soon")
    assert (status, doc["error"]["param"]) == (400, "period")
    response = await client.get("/v1/customers/nobody/usage")
    assert response.status == 401


async def test_customer_without_subscription_gets_usage_without_prices(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    await seed_customer(db, "free-1", "cus_free")
    await db.execute(
        "INSERT INTO meter_definitions (tenant, meter, aggregation) VALUES ('acme', 'gb', 'max')"
    )
    now = int(time.time())
    await post_events(client, api_key, calls("free-1", "a", [4, 6], now - 60))
    gauge = [{"id": "g1", "customer": "cus_free", "meter": "gb", "value": 9, "timestamp": now}]
    await post_events(client, api_key, gauge)
    assert await drain(settings, redis) == 3
    await post_events(client, api_key, calls("free-1", "b", [1], now - 60))  # pending
    gauge = [{"id": "g2", "customer": "free-1", "meter": "gb", "value": 2, "timestamp": now}]
    await post_events(client, api_key, gauge)
    status, doc = await get(client, api_key, "/v1/customers/cus_free/usage")
    assert status == 200, doc
    assert (doc["subscription"], doc["invoice"], doc["period_basis"]) == (
        None,
        None,
        "calendar_month_utc",
    )
    by_meter = {i["meter"]: i for i in doc["items"]}
    assert (by_meter["calls"]["quantity"], by_meter["calls"]["amount"]) == ("11", None)
    assert (by_meter["gb"]["aggregation"], by_meter["gb"]["quantity"]) == ("max", "9")
    assert d(by_meter["calls"]["quantity"]) == 11


async def test_a_last_meter_folds_across_both_customer_keys(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    """A gauge meter (`last`) read from the running totals: the customer's events under our id
    and under its Stripe id are two totals; the later event wins whichever key it came by."""
    seeded = await seed_plan(db)
    await db.execute(
        "INSERT INTO meter_definitions (tenant, meter, aggregation)"
        " VALUES ('acme', 'calls', 'last')"
    )
    recent = int(time.time()) - 3 * HOUR
    await post_events(client, api_key, calls("c-1", "early", [900], recent))
    await post_events(client, api_key, calls(seeded.stripe_id, "late", [12], recent + HOUR))
    await post_events(client, api_key, calls("c-1", "mid", [30], recent + 60))
    assert await drain(settings, redis) == 3
    status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
    assert status == 200, doc
    assert _item(doc, "si_m_c-1")["quantity"] == "12"  # the latest, under the cus_ id
