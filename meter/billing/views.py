"""Reading a customer's billing state for the API: subscription view and entitlements."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from meter.billing import queries
from meter.billing.errors import NotFound
from meter.billing.rules import access_for, plan_from_metadata
from meter.usage.tally import Tally

Doc = dict[str, Any]


def _unix(value: dt.datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def _md(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    doc = orjson.loads(value) if isinstance(value, str | bytes) else value
    return {str(k): str(v) for k, v in doc.items()}


async def customer_row(conn: asyncpg.Connection, tenant: str, key: str) -> asyncpg.Record:
    row = await conn.fetchrow(queries.CUSTOMER_BY_KEY, tenant, key)
    if row is None:
        raise NotFound(f"no billing customer {key!r}", param="id")
    return row


async def subscription_state(
    conn: asyncpg.Connection, customer: asyncpg.Record
) -> tuple[asyncpg.Record | None, list[asyncpg.Record], asyncpg.Record | None]:
    sub = await conn.fetchrow(queries.CURRENT_SUBSCRIPTION, customer["stripe_id"])
    if sub is None:
        return None, [], None
    items = await conn.fetch(queries.SUBSCRIPTION_ITEMS, sub["id"])
    dunning = await conn.fetchrow(queries.DUNNING_OF, sub["id"])
    return sub, list(items), dunning


def _dunning_doc(dunning: asyncpg.Record | None) -> Doc | None:
    if dunning is None or dunning["resolved_at"] is not None:
        return None
    return {
        "invoice": dunning["invoice"],
        "failed_at": _unix(dunning["failed_at"]),
        "reminders_sent": dunning["steps_sent"],
        "restricted_at": _unix(dunning["restricted_at"]),
    }


def _item_doc(item: asyncpg.Record) -> Doc:
    return {
        "id": item["id"],
        "price": item["price"],
        "product": item["product"],
        "product_name": item["product_name"],
        "quantity": item["quantity"],
        "usage_type": item["usage_type"],
        "meter": item["event_name"],
        "unit_amount": item["unit_amount"],
        "currency": item["currency"],
        "interval": item["recurring_interval"],
    }


def subscription_doc(
    customer: asyncpg.Record,
    sub: asyncpg.Record,
    items: list[asyncpg.Record],
    dunning: asyncpg.Record | None,
) -> Doc:
    licensed = [i for i in items if i["usage_type"] != "metered"] or items
    plan = licensed[0] if licensed else None
    return {
        "customer": customer["external_id"],
        "stripe_customer": customer["stripe_id"],
        "subscription": {
            "id": sub["id"],
            "status": sub["status"],
            "plan": None
            if plan is None
            else {"price": plan["price"], "product": plan["product"], "name": plan["product_name"]},
            "currency": sub["currency"],
            "current_period": {
                "start": _unix(sub["current_period_start"]),
                "end": _unix(sub["current_period_end"]),
            },
            "trial": {"start": _unix(sub["trial_start"]), "end": _unix(sub["trial_end"])},
            "cancel_at_period_end": sub["cancel_at_period_end"],
            "cancel_at": _unix(sub["cancel_at"]),
            "canceled_at": _unix(sub["canceled_at"]),
            "ended_at": _unix(sub["ended_at"]),
            "paused": sub["status"] == "paused" or sub["pause_behavior"] is not None,
            "latest_invoice": sub["latest_invoice"],
            "items": [_item_doc(i) for i in items],
            "dunning": _dunning_doc(dunning),
        },
    }


async def usage_in_period(
    conn: asyncpg.Connection,
    tenant: str,
    keys: Sequence[str | None],
    meter: str,
    start: dt.datetime,
    end: dt.datetime,
) -> Decimal:
    """What `meter` reports for the customer (by any of its keys) over the item periods that
    start in [start, end): the period totals folded as the usage API folds them, then the
    meter's aggregation (sum, count, max, last or unique_count)."""
    tally = Tally()
    for row in await conn.fetch(queries.USAGE_IN_PERIOD, tenant, list(keys), meter, start, end):
        tally.add_rollups(row)
    aggregation: str = await conn.fetchval(queries.METER_AGGREGATION, tenant, meter)
    return tally.quantity(aggregation)


async def meter_limit(
    conn: asyncpg.Connection, tenant: str, key: str, meter: str
) -> Decimal | None:
    """The entitlement limit `limit.<meter>` of the customer's current subscription (price
    metadata over product metadata, as in `entitlements_doc`); None without one."""
    customer = await conn.fetchrow(queries.CUSTOMER_BY_KEY, tenant, key)
    if customer is None:
        return None
    _, items, _ = await subscription_state(conn, customer)
    metadatas: list[dict[str, str]] = []
    for item in items:
        metadatas += [_md(item["product_metadata"]), _md(item["price_metadata"])]
    return plan_from_metadata(*metadatas).limits.get(meter)


async def entitlements_doc(
    conn: asyncpg.Connection,
    tenant: str,
    customer: asyncpg.Record,
    *,
    grace_s: float,
    now: int,
) -> Doc:
    sub, items, dunning = await subscription_state(conn, customer)
    open_dunning = dunning if dunning is not None and dunning["resolved_at"] is None else None
    decision = access_for(
        None if sub is None else sub["status"],
        failed_at=None if open_dunning is None else _unix(open_dunning["failed_at"]),
        restricted=open_dunning is not None and open_dunning["restricted_at"] is not None,
        grace_s=grace_s,
        now=now,
    )
    metadatas: list[dict[str, str]] = []
    for item in items:
        metadatas += [_md(item["product_metadata"]), _md(item["price_metadata"])]
    plan = plan_from_metadata(*metadatas)
    limits: dict[str, Doc] = {}
    keys = [customer["external_id"], customer["stripe_id"]]
    for meter, limit in sorted(plan.limits.items()):
        used = Decimal(0)
        if sub is not None and sub["current_period_start"] is not None:
            used = await usage_in_period(
                conn, tenant, keys, meter, sub["current_period_start"], sub["current_period_end"]
            )
        limits[meter] = {
            "limit": _num(limit),
            "used": _num(used),
            "remaining": _num(max(limit - used, Decimal(0))),
            "exceeded": used > limit,
        }
    return {
        "customer": customer["external_id"],
        "access": decision.access.value,
        "reason": decision.reason,
        "status": None if sub is None else sub["status"],
        "grace_until": decision.grace_until,
        "subscription": None if sub is None else sub["id"],
        "features": list(plan.features) if decision.access.value == "allowed" else [],
        "limits": limits,
    }


def _num(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)
