"""Entitlements and the MRR gauge read a meter's usage over the period with its aggregation:
a `max` meter whose hours peaked at 5 and 7 used 7 this period, not 12."""

from __future__ import annotations

from decimal import Decimal

from aggregator.fold import BucketKey, Rollup
from aggregator.store import upsert_buckets
from aggregator.windows import HOUR_MS, to_ms

from .conftest import TENANT, Stack, catalog, clock_customer, hour_now


def peak(value: int, at_ms: int, event_id: str) -> Rollup:
    v = Decimal(value)
    return Rollup(1, v, v, v, at_ms, event_id)


async def test_max_meter_usage_is_the_period_peak(stack: Stack) -> None:
    cat = await catalog(stack.sdk)
    start = hour_now()
    _, cus = await clock_customer(stack.sdk, "peak-1", start)
    await stack.sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["basic"]}, {"price": cat["metered"]}]}
    )
    await stack.settle()
    async with stack.billing.connection() as conn:
        # A local definition overrides the Stripe meter's formula.
        await conn.execute(
            "INSERT INTO meter_definitions (tenant, meter, aggregation) VALUES ($1, 'calls', 'max')"
            " ON CONFLICT (tenant, meter) DO UPDATE SET aggregation = 'max', source = 'local'",
            TENANT,
        )
        period = await conn.fetchrow(
            "SELECT p.item, p.period_start, p.period_end FROM subscription_item_periods p"
            " JOIN subscription_items i ON i.id = p.item WHERE i.price = $1",
            cat["metered"],
        )
        assert period is not None
        period_ms = to_ms(period["period_start"])
        # Two hours of the period, peaking at 5 and then 7 (written as the aggregator does).
        buckets = {
            BucketKey(TENANT, "peak-1", "calls", period["item"], period_ms, h, h + HOUR_MS): peak(
                value, h + 60_000, f"e{value}"
            )
            for value, h in ((5, period_ms), (7, period_ms + HOUR_MS))
        }
        async with conn.transaction():
            await upsert_buckets(conn, buckets)

    # Half way through the month, 7 units project to 14 for the month at 2 cents: 20.00 + 0.28.
    end_s = int(period["period_end"].timestamp())
    await stack.jobs(start + (end_s - start) // 2)
    assert stack.billing.metrics.mrr.labels("usd")._value.get() == 2000 + 28
    status, ent = await stack.get("/v1/customers/peak-1/entitlements")
    assert status == 200, ent
    assert ent["limits"]["calls"] == {
        "limit": 1000,
        "used": 7,
        "remaining": 993,
        "exceeded": False,
    }
