"""Writing Stripe objects into Postgres, order-safely, inside the caller's transaction.

Each `apply_*` locks the stored row, decides with `rules.order_decision` whether the incoming copy
is newer, and on a tie asks `refetch` for Stripe's current object. Webhooks and `meter sync` both
write through here, so the two can run at once without either undoing the other.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from meter.billing import convert, queries
from meter.billing.gateway import Obj
from meter.billing.rules import Order, is_churn, meter_refusal, order_decision
from meter.core.ports import UsageUpkeep

log = logging.getLogger(__name__)

# (kind, id) → Stripe's current object, or None if it is gone.
Refetch = Callable[[str, str], Awaitable[Obj | None]]


@dataclass
class Effects:
    """What a write changed that matters after commit (re-attribution, metrics)."""

    # (tenant, customer key) whose unattributed usage may now have an item.
    reattribute: set[tuple[str, str]] = field(default_factory=set)
    # A meter changed: any customer's usage may now be attributable.
    sweep: bool = False
    churned: int = 0
    payments: list[str] = field(default_factory=list)
    stale: bool = False
    # Stripe meters stored but not reported to, each with why and the fix (rules.meter_refusal).
    refused_meters: list[str] = field(default_factory=list)

    def merge(self, other: Effects) -> None:
        self.reattribute |= other.reattribute
        self.sweep = self.sweep or other.sweep
        self.churned += other.churned
        self.payments += other.payments
        self.stale = self.stale or other.stale
        self.refused_meters += other.refused_meters


async def _current(
    conn: asyncpg.Connection,
    lock_sql: str,
    kind: str,
    obj: Obj,
    created: int,
    refetch: Refetch,
) -> tuple[Obj | None, bool]:
    """The object to store (None: it is gone in Stripe) and whether anything is to be done."""
    stored = await conn.fetchval(lock_sql, obj["id"])
    decision = order_decision(stored, created)
    if decision is Order.SKIP:
        return None, False
    if decision is Order.REFETCH:
        return await refetch(kind, obj["id"]), True
    return obj, True


async def _customer_keys(conn: asyncpg.Connection, stripe_id: str) -> set[tuple[str, str]]:
    row = await conn.fetchrow(queries.CUSTOMER_KEYS, stripe_id)
    if row is None:
        return set()
    return {(row["tenant"], row["external_id"]), (row["tenant"], row["stripe_id"])}


async def apply_customer(
    conn: asyncpg.Connection, obj: Obj, created: int, refetch: Refetch, default_tenant: str
) -> Effects:
    await conn.execute(queries.LOCK_CUSTOMER, obj["id"])
    stored = await conn.fetchrow(queries.CUSTOMER_CREATED_FOR_UPDATE, obj["id"])
    decision = order_decision(None if stored is None else stored["event_created"], created)
    if decision is Order.SKIP:
        return Effects(stale=True)
    current: Obj | None = obj
    if decision is Order.REFETCH:
        current = await refetch("customer", obj["id"])
    if current is None or current.get("deleted"):
        await conn.execute(queries.ENSURE_CUSTOMER, obj["id"], default_tenant)
        await conn.execute(queries.MARK_CUSTOMER_DELETED, obj["id"], created)
        return Effects()
    external, tenant = convert.customer_link(current)
    tenant_now = tenant or (stored["tenant"] if stored else default_tenant)
    if external is not None:
        owner = await conn.fetchval(queries.EXTERNAL_ID_OWNER, tenant_now, external)
        if owner is not None and owner != obj["id"]:
            # Two Stripe customers claim one of our ids: keep the first link, never fail the
            # webhook over it (Stripe would retry forever).
            external = None
    await conn.execute(
        queries.UPSERT_CUSTOMER,
        *convert.customer_row(current),
        tenant,
        external,
        default_tenant,
        created,
    )
    return Effects(reattribute=await _customer_keys(conn, obj["id"]))


async def link_customer(
    conn: asyncpg.Connection, stripe_id: str, tenant: str, external_id: str
) -> Effects:
    """Tie a Stripe customer to our id (checkout's client_reference_id)."""
    await conn.execute(queries.LOCK_CUSTOMER, stripe_id)
    owner = await conn.fetchval(queries.EXTERNAL_ID_OWNER, tenant, external_id)
    if owner is None or owner == stripe_id:
        await conn.execute(queries.LINK_CUSTOMER, stripe_id, tenant, external_id)
    return Effects(reattribute=await _customer_keys(conn, stripe_id))


async def apply_product(
    conn: asyncpg.Connection, obj: Obj, created: int, refetch: Refetch
) -> Effects:
    current, todo = await _current(conn, queries.PRODUCT_CREATED, "product", obj, created, refetch)
    if not todo:
        return Effects(stale=True)
    row = convert.product_row(current or {**obj, "deleted": True})
    await conn.execute(queries.UPSERT_PRODUCT, *row, created)
    return Effects()


async def apply_price(
    conn: asyncpg.Connection, obj: Obj, created: int, refetch: Refetch
) -> Effects:
    current, todo = await _current(conn, queries.PRICE_CREATED, "price", obj, created, refetch)
    if not todo:
        return Effects(stale=True)
    row = convert.price_row(current or {**obj, "active": False})
    await conn.execute(queries.UPSERT_PRICE, *row, created)
    return Effects()


async def apply_meter(
    conn: asyncpg.Connection, obj: Obj, created: int, refetch: Refetch, default_tenant: str
) -> Effects:
    current, todo = await _current(
        conn, queries.METER_CREATED, "billing.meter", obj, created, refetch
    )
    if not todo or current is None:
        return Effects(stale=True)
    row = convert.meter_row(current)
    # A Stripe meter's formula is the aggregation of its event name for every tenant (read
    # through the stripe_meter_formulas view), unless a tenant defines the meter locally.
    refusal = meter_refusal(row[0], row[1], row[3], row[6])
    await conn.execute(queries.UPSERT_METER, *row, refusal is None, created)
    effects = Effects(sweep=True)
    if refusal is not None:
        log.error("stripe meter not reportable: %s", refusal, extra={"meter": row[0]})
        effects.refused_meters.append(refusal)
    return effects


async def apply_subscription(
    conn: asyncpg.Connection,
    obj: Obj,
    created: int,
    refetch: Refetch,
    default_tenant: str,
    upkeep: UsageUpkeep,
) -> Effects:
    stored = await conn.fetchrow(queries.SUBSCRIPTION_FOR_UPDATE, obj["id"])
    decision = order_decision(None if stored is None else stored["event_created"], created)
    if decision is Order.SKIP:
        return Effects(stale=True)
    current: Obj | None = obj
    if decision is Order.REFETCH:
        current = await refetch("subscription", obj["id"])
    if current is None:
        return Effects(stale=True)
    return await _write_subscription(
        conn, current, created, stored, refetch, default_tenant, upkeep, changed_at=created
    )


async def apply_subscription_answer(
    conn: asyncpg.Connection,
    obj: Obj,
    version: int,
    refetch: Refetch,
    default_tenant: str,
    upkeep: UsageUpkeep,
) -> Effects:
    """Store the subscription Stripe answered a change of ours with. `version` is the
    `event_created` we read before calling Stripe. The answer is newer than every event
    created up to that version; if a webhook landed meanwhile (the stored version moved), its
    order relative to our answer is unknown, so Stripe's current copy is stored instead — under
    the row lock, so no other writer interleaves. Either way the row keeps the newest event
    version: an event of the same second still refetches, a newer one still applies.

    The answer does not say when a price changed (`version` is older): the item's period keeps
    its price until the change's webhook, whose time starts the new price's period."""
    stored = await conn.fetchrow(queries.SUBSCRIPTION_FOR_UPDATE, obj["id"])
    at = version if stored is None else max(version, stored["event_created"])
    current: Obj | None = obj
    if stored is not None and stored["event_created"] > version:
        current = await refetch("subscription", obj["id"])
    if current is None:
        return Effects(stale=True)
    return await _write_subscription(
        conn, current, at, stored, refetch, default_tenant, upkeep, changed_at=None
    )


async def _discounts(
    current: Obj, stored: asyncpg.Record | None, refetch: Refetch
) -> tuple[Obj, list[dict[str, Any]]]:
    """The subscription to store and its discounts down to the coupon terms. A webhook names
    discounts by id only: the same ids as stored keep the stored copy (a discount never
    changes); new ones are read from Stripe, whose refetch expands them (the gateway asks for
    `discounts.source.coupon`), and then the refetched, current object is stored whole."""
    expanded = convert.discounts(current)
    if expanded is not None:
        return current, expanded
    known = [] if stored is None else _json_list(stored["discounts"])
    if [d["id"] for d in known] == convert.discount_ids(current):
        return current, known
    fresh = await refetch("subscription", current["id"])
    expanded = None if fresh is None else convert.discounts(fresh)
    if fresh is None or expanded is None:
        # Stripe did not expand them (an old gateway): price without, and say so in the log.
        log.warning("subscription discounts not expanded", extra={"subscription": current["id"]})
        return current, []
    return fresh, expanded


def _json_list(value: Any) -> list[dict[str, Any]]:
    data = orjson.loads(value) if isinstance(value, str | bytes) else value
    return list(data or [])


async def _write_subscription(
    conn: asyncpg.Connection,
    current: Obj,
    created: int,
    stored: asyncpg.Record | None,
    refetch: Refetch,
    default_tenant: str,
    upkeep: UsageUpkeep,
    *,
    changed_at: int | None,
) -> Effects:
    current, discounts = await _discounts(current, stored, refetch)
    customer = convert.ref(current["customer"])
    assert customer is not None
    # The customer row may not have arrived yet; attribution joins through it.
    await conn.execute(queries.ENSURE_CUSTOMER, customer, default_tenant)
    for item in (current.get("items") or {}).get("data") or []:
        price = item.get("price")
        if isinstance(price, dict):
            await conn.execute(queries.INSERT_PRICE_IF_MISSING, *convert.price_row(price), 0)
    await conn.execute(
        queries.UPSERT_SUBSCRIPTION,
        *convert.subscription_row(current),
        created,
        convert.jsonb(discounts),
        convert.jsonb(convert.tax_rates(current.get("default_tax_rates"))),
    )
    mode = convert.billing_mode(current)
    await conn.execute(queries.SET_BILLING_MODE, current["id"], mode, created)
    await _apply_items(conn, current, created, changed_at, upkeep)
    old_status = None if stored is None else stored["status"]
    effects = Effects(reattribute=await _customer_keys(conn, customer))
    if is_churn(old_status, current["status"]):
        effects.churned = 1
    return effects


async def _apply_items(
    conn: asyncpg.Connection, sub: Obj, created: int, changed_at: int | None, upkeep: UsageUpkeep
) -> None:
    rows = convert.item_rows(sub)
    # An item added by a later update bills from then; one the subscription was created with
    # bills from its period's start (a backdated subscription's too).
    created_at = convert.ts(sub.get("created"))
    added = {
        i["id"]: at
        for i in (sub.get("items") or {}).get("data") or []
        if (at := convert.item_added(i)) is not None and (created_at is None or at > created_at)
    }
    change = None if changed_at is None else convert.ts(changed_at)
    for row in rows:
        await conn.execute(queries.UPSERT_ITEM, *row)
        item, price, meter, start, end = row[0], row[2], row[5], row[6], row[7]
        if start < end:
            await _item_period(
                conn, sub, item, price, meter, (start, end), added.get(item), change, upkeep
            )
    at = convert.ts(created)
    removed = [
        r["id"] for r in await conn.fetch(queries.REMOVE_ITEMS, sub["id"], [r[0] for r in rows], at)
    ]
    if removed:
        await _end_periods(conn, removed, at)
    ended = convert.ts(sub.get("ended_at"))
    if sub["status"] in ("canceled", "incomplete_expired") and ended is not None:
        items = [r["id"] for r in await conn.fetch(queries.ITEMS_OF, sub["id"])]
        await _end_periods(conn, items, ended)


async def _item_period(
    conn: asyncpg.Connection,
    sub: Obj,
    item: str,
    price: str,
    meter: str | None,
    stripe_period: tuple[dt.datetime, dt.datetime],
    added: dt.datetime | None,
    change: dt.datetime | None,
    upkeep: UsageUpkeep,
) -> None:
    """Record which price bills the item when, inside its Stripe period [start, end). Stripe
    bills a metered price for the item's usage since the price was set on it: an item added
    mid-period from its `created`, a price changed mid-period from the change (the old price's
    usage before it is billed by a flexible mode's invoice item, or not at all in classic
    mode: docs.stripe.com/billing/subscriptions/usage-based/manage-billing-setup, "Update
    prices mid-cycle"). So a change inside a period ends the item's period at `change` (the
    webhook's time) and starts one with the new price there; usage is never repriced."""
    start, end = stripe_period
    now = await conn.fetchrow(queries.ITEM_PERIOD_NOW, item, start, end)
    if now is None:
        begin = added if added is not None and start < added < end else start
        await _start_period(conn, sub, item, begin, end, meter, price, upkeep)
        return
    if now["price"] is None or now["price"] == price:
        await conn.execute(queries.UPSERT_ITEM_PERIOD, item, now["period_start"], end, meter, price)
    elif change is None:
        return  # an answer to our own change: its webhook says when it happened
    elif now["period_start"] < change < end:
        await _start_period(conn, sub, item, change, end, meter, price, upkeep)
    else:
        await conn.execute(queries.UPSERT_ITEM_PERIOD, item, now["period_start"], end, meter, price)


async def _start_period(
    conn: asyncpg.Connection,
    sub: Obj,
    item: str,
    start: dt.datetime,
    end: dt.datetime,
    meter: str | None,
    price: str,
    upkeep: UsageUpkeep,
) -> None:
    """Record the item's current period. Periods of one item never overlap: a period that
    starts inside an earlier one (a billing-cycle anchor reset, a resume, a price change) ends
    that one at its start, as Stripe's invoice for the earlier period does. Usage already folded
    into the earlier period past the cut moves to the new one (aggregator/cuts.py says which
    and why)."""
    # 1. Cut the earlier period; 2. record the new one; 3. move the usage past the cut. One
    #    transaction (the caller's): a crash leaves all three or none.
    cut = await conn.fetch(queries.CUT_ITEM_PERIODS_AT, item, start)
    await conn.execute(queries.UPSERT_ITEM_PERIOD, item, start, end, meter, price)
    if not cut:
        return
    customer = convert.ref(sub["customer"])
    keys = await conn.fetchrow(queries.CUSTOMER_KEYS, customer)
    if keys is not None:
        await upkeep.move_after_cut(
            conn, keys["tenant"], [keys["external_id"], keys["stripe_id"]], item, start
        )


async def _end_periods(conn: asyncpg.Connection, items: list[str], at: dt.datetime | None) -> None:
    """Usage after `at` is no longer billed under these items."""
    if at is None:
        return
    await conn.execute(queries.DROP_PERIODS_AFTER, items, at)
    await conn.execute(queries.CUT_PERIODS_AT, items, at)


async def apply_invoice(
    conn: asyncpg.Connection, obj: Obj, created: int, refetch: Refetch
) -> Effects:
    # The invoice items it took are no longer pending, whichever copy of it is newer.
    for row in convert.invoice_item_lines(obj):
        await conn.execute(queries.UPSERT_PENDING_ITEM, *row, 0)
    current, todo = await _current(conn, queries.INVOICE_CREATED, "invoice", obj, created, refetch)
    if not todo or current is None:
        return Effects(stale=True)
    await conn.execute(queries.UPSERT_INVOICE, *convert.invoice_row(current), created)
    return Effects()


async def apply_invoice_item(
    conn: asyncpg.Connection, obj: Obj, created: int, deleted: bool
) -> Effects:
    """An invoice item (`invoiceitem.*`): pending until an invoice takes it."""
    row = convert.pending_item_row(obj, deleted)
    await conn.execute(queries.UPSERT_PENDING_ITEM, *row, created)
    return Effects()
