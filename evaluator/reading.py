"""What a rule measures for one customer now: its billing period, the meter's usage in it, the
meter line's amount so far (or the whole invoice's, for a rule without a meter) and its run-rate
projection — read and priced as the usage API and the entitlements endpoint do (meter/usage,
meter/billing/views.py), so the numbers agree with them.

Usage is what the aggregator has committed (usage_totals and unattributed rollups); pending
events still in the Redis streams are not counted: the aggregator's touch after its commit
brings the evaluation right behind them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from evaluator import queries
from meter.billing import queries as billing_queries
from meter.billing.errors import NotFound
from meter.billing.views import meter_limit
from meter.pricing import Period, trailing_window
from meter.usage import queries as usage_queries
from meter.usage import report, store
from meter.usage.api import invoice_so_far, month_of
from meter.usage.tally import Tally


@dataclass(frozen=True, slots=True)
class Reading:
    customer: str  # the customer's own id when it is a billing customer, else the key given
    keys: tuple[str, ...]  # every key its events may name it by
    period: Period
    units: Decimal
    amount: int | None  # the meter's line so far (minor units); None: no priced item
    currency: str | None
    projected: Decimal | None  # run-rate projection of the period's units; None: no price
    limit: Decimal | None  # `limit.<meter>` of the customer's plan


async def customer_keys(
    conn: asyncpg.Connection, tenant: str, key: str
) -> tuple[str, tuple[str, ...]]:
    """The customer's own id and all its keys; a key no billing customer has stands alone."""
    try:
        plan = await store.load_plan(conn, tenant, key)
    except NotFound:
        return key, (key,)
    return plan.external_id, tuple(plan.keys)


async def read(
    conn: asyncpg.Connection,
    tenant: str,
    key: str,
    meter: str,
    now: int,
    *,
    with_limit: bool,
    dimension_filter: Sequence[tuple[str, str]] = (),
) -> Reading:
    """With a `dimension_filter`, `units` is the usage of the buckets with those dimension values
    (the usage API's `filter[...]` breakdown), and the priced fields are left out."""
    try:
        plan: store.Plan | None = await store.load_plan(conn, tenant, key)
    except NotFound:
        plan = None
    customer = key if plan is None else plan.external_id
    keys = [key] if plan is None else plan.keys
    item = None
    if plan is not None and plan.subscription is not None and plan.status not in store.ENDED:
        item = next((i for i in plan.items if not i.removed and i.meter == meter), None)
    # Without an item on the meter, the period is the calendar month (UTC), as the usage API's.
    period = item.billing if item is not None else month_of(now)
    tally = Tally()
    window = (store.ts(period.start), store.ts(period.end))
    if dimension_filter:
        rows = await conn.fetch(
            usage_queries.GROUPS_IN_WINDOW,
            tenant,
            keys,
            meter,
            *window,
            None,
            None,
            None,
            [k for k, _ in dimension_filter],
            [v for _, v in dimension_filter],
        )
    else:
        rows = await conn.fetch(billing_queries.USAGE_IN_PERIOD, tenant, keys, meter, *window)
    for row in rows:
        tally.add_rollups(row)
    if item is not None:
        aggregation = item.aggregation
    else:
        aggregation = await conn.fetchval(billing_queries.METER_AGGREGATION, tenant, meter)
    units = tally.quantity(aggregation)
    amount = projected = currency = None
    if plan is not None and item is not None and item.price is not None and not dimension_filter:
        # The projection's rate is the trailing window's (pricing.project_usage).
        recent = trailing_window(period, now)
        tally.add_recent(
            await conn.fetchrow(
                queries.RECENT_USAGE,
                tenant,
                keys,
                meter,
                store.ts(recent.start),
                store.ts(recent.end + 1),
            )
        )
        doc, forecast = report.item_doc(
            item, period, tally, now, usage_charged=report.terms_of(plan, period).usage_charged
        )
        amount, currency, projected = doc["amount"], doc["currency"], forecast
    limit = await meter_limit(conn, tenant, customer, meter) if with_limit else None
    return Reading(customer, tuple(keys), period, units, amount, currency, projected, limit)


async def read_invoice(conn: asyncpg.Connection, tenant: str, key: str, now: int) -> Reading:
    """The customer's whole upcoming invoice so far, for a rule without a meter: `amount` is its
    total as the usage API's `invoice.total` shows it (licensed fees, discount and tax
    included; meter/usage/api.py `invoice_so_far`), over the invoice's billing period. A
    customer without one (no subscription, no priced item) reads `amount` None over the
    calendar month: nothing to compare."""
    found = await invoice_so_far(conn, tenant, key, now)
    if found is None:
        customer, keys = await customer_keys(conn, tenant, key)
        return Reading(customer, keys, month_of(now), Decimal(0), None, None, None, None)
    plan = found.plan
    return Reading(
        plan.external_id,
        tuple(plan.keys),
        found.period,
        Decimal(0),  # no one meter's units: the event names none
        found.total,
        found.currency,
        None,
        None,
    )


def period_start(reading: Reading) -> dt.datetime:
    return store.ts(reading.period.start)
