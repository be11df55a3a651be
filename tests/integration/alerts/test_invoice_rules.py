"""`amount` rules without a meter: the customer's whole upcoming invoice so far (every metered
line, licensed fees included), as the usage API's `invoice.total` shows it."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from evaluator import reading
from meter.config import Settings
from tests.integration.alerts.conftest import (
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
from tests.integration.alerts.test_evaluation import current_period
from tests.integration.usage.conftest import at, get

# The prices, for the oracle below: `calls` graduated (100 × 2¢, then 0.5¢ + 300 flat; conftest's
# `seed`), `tokens` 3¢ a unit, and a licensed fee of 1000 (× 1) billed in advance.
TOKEN_CENTS = 3
FEE = 1000


async def add_item(
    db: asyncpg.Connection,
    external_id: str,
    suffix: str,
    period: tuple[int, int],
    *,
    unit_amount: int,
    meter: str | None,
) -> None:
    """A per-unit price on the customer's subscription: metered on `meter`, or licensed (× 1)."""
    price, item = f"price_{external_id}_{suffix}", f"si_{external_id}_{suffix}"
    if meter is not None:
        await db.execute(
            "INSERT INTO billing_meters (id, event_name, formula, customer_key, value_key,"
            " status, event_created) VALUES ($1, $2, 'sum', 'stripe_customer_id', 'value',"
            " 'active', 0) ON CONFLICT DO NOTHING",
            f"mtr_{meter}",
            meter,
        )
    await db.execute(
        "INSERT INTO prices (id, product, active, currency, billing_scheme, unit_amount,"
        " unit_amount_decimal, recurring_interval, recurring_interval_count, usage_type, meter,"
        " event_created) VALUES ($1, 'prod_1', true, 'usd', 'per_unit', $2, $3, 'month', 1, $4,"
        " $5, 0)",
        price,
        unit_amount,
        str(unit_amount),
        "licensed" if meter is None else "metered",
        None if meter is None else f"mtr_{meter}",
    )
    await db.execute(
        "INSERT INTO subscription_items (id, subscription, price, quantity, meter,"
        " current_period_start, current_period_end) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        item,
        f"sub_{external_id}",
        price,
        1 if meter is None else None,
        None if meter is None else f"mtr_{meter}",
        at(period[0]),
        at(period[1]),
    )
    await db.execute(
        "INSERT INTO subscription_item_periods (item, period_start, period_end, meter)"
        " VALUES ($1, $2, $3, $4)",
        item,
        at(period[0]),
        at(period[1]),
        None if meter is None else f"mtr_{meter}",
    )


async def seed_two_meters(
    db: asyncpg.Connection, external_id: str, period: tuple[int, int]
) -> None:
    await seed(db, period, external_id=external_id)
    await add_item(db, external_id, "tok", period, unit_amount=TOKEN_CENTS, meter="tokens")
    await add_item(db, external_id, "fee", period, unit_amount=FEE, meter=None)


def tokens(customer: str, tag: str, values: list[int]) -> list[Any]:
    return [e | {"meter": "tokens"} for e in calls(customer, tag, values)]


async def test_the_invoice_crosses_only_with_both_meters_usage_once(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    period = current_period()
    await seed_two_meters(db, "c-1", period)
    # By hand: 100 calls are 100 × 2 = 200 (the first tier only); 100 tokens 100 × 3 = 300;
    # the fee 1000. Either meter with the fee stays under 1400 (1200, 1300), both reach 1500.
    calls_amount, tokens_amount = 100 * 2, 100 * TOKEN_CENTS
    assert calls_amount + FEE < 1400
    assert tokens_amount + FEE < 1400
    total = calls_amount + tokens_amount + FEE
    assert total == 1500
    rule = await create_rule(client, api_key, kind="amount", thresholds=[1400, 5000])
    await post_events(client, api_key, calls("c-1", "a", [60, 40]))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    await sweep(settings, redis)
    assert await webhook_events(db) == []
    # The tokens' fold is a touch of `tokens` only: the rule on the whole invoice is among its
    # rules, and reads both meters.
    await post_events(client, api_key, tokens("c-1", "b", [100]))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    fired = await webhook_events(db)
    assert len(fired) == 1
    # Evaluated again, by touches and sweeps: still one.
    await post_events(client, api_key, tokens("cus_c-1", "c", [0]))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    await sweep(settings, redis)
    await sweep(settings, redis)
    assert await webhook_events(db) == fired
    _, tenant, type_, data = fired[0]
    assert (tenant, type_) == ("acme", "usage.threshold_crossed")
    assert data == {
        "rule": rule["id"],
        "customer": "c-1",
        "meter": None,
        "kind": "amount",
        "threshold": "1400",
        "value": str(total),
        "currency": "usd",
        "period": {"start": period[0], "end": period[1]},
    }
    # The same number as the usage API's invoice.
    status, usage = await get(client, api_key, "/v1/customers/c-1/usage")
    assert (status, usage["invoice"]["total"]) == (200, total)
    firings = await db.fetch("SELECT threshold, value FROM alert_firings")
    assert [(str(r["threshold"]), r["value"]) for r in firings] == [("1400", total)]


async def test_the_sweep_finds_invoices_without_usage(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    """Licensed fees alone make an invoice: a customer with no usage at all is a sweep
    candidate of a rule on the whole invoice, and crosses at its fee."""
    period = current_period()
    await seed_two_meters(db, "c-2", period)
    await create_rule(client, api_key, kind="amount", thresholds=[FEE, FEE + 1])
    await create_rule(client, api_key, meter="calls", kind="amount", thresholds=[1])
    await sweep(settings, redis)
    await sweep(settings, redis)
    fired = await webhook_events(db)
    # The meter's rule has no line to price yet (no usage: 0); the invoice is the fee.
    assert [(e[3]["meter"], e[3]["threshold"], e[3]["value"]) for e in fired] == [
        (None, str(FEE), str(FEE))
    ]


async def test_a_customer_touching_two_meters_reads_its_invoice_once(
    client: Client,
    api_key: str,
    db: asyncpg.Connection,
    redis: Redis,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Folds of both meters in one batch of touches: the rule on the whole invoice is one
    evaluation of the customer, not one per meter (each would read the whole invoice)."""
    await seed_two_meters(db, "c-1", current_period())
    await create_rule(client, api_key, kind="amount", thresholds=[1400])
    await create_rule(client, api_key, meter="calls", kind="units", thresholds=[50])
    reads: list[str] = []
    real = reading.read_invoice

    async def counted(conn: asyncpg.Connection, tenant: str, key: str, now: int) -> Any:
        reads.append(key)
        return await real(conn, tenant, key, now)

    monkeypatch.setattr(reading, "read_invoice", counted)
    await post_events(client, api_key, calls("c-1", "a", [60]) + tokens("c-1", "b", [100]))
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    assert reads == ["c-1"]
    fired = {(e[2], e[3]["threshold"]) for e in await webhook_events(db)}
    assert fired == {("usage.threshold_crossed", "1400"), ("usage.threshold_crossed", "50")}
