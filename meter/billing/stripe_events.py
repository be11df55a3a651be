"""What each Stripe event type does to our copy: a dict from event type to handler.

A handler runs inside the webhook's transaction (the event id is recorded in the same one), gets
the event as the JSON Stripe sent, and returns the `Effects` to act on after commit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from meter.billing import convert, queries, store
from meter.billing.gateway import Obj
from meter.billing.store import Effects, Refetch
from meter.core.ports import UsageUpkeep

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Context:
    refetch: Refetch
    default_tenant: str
    upkeep: UsageUpkeep


Handler = Callable[[Context, asyncpg.Connection, Obj], Awaitable[Effects]]


def _obj(event: Obj) -> Obj:
    obj: Obj = event["data"]["object"]
    return obj


async def customer(ctx: Context, conn: asyncpg.Connection, event: Obj) -> Effects:
    obj = _obj(event)
    if event["type"] == "customer.deleted":
        obj = {**obj, "deleted": True}
        await conn.execute(queries.ENSURE_CUSTOMER, obj["id"], ctx.default_tenant)
        await conn.execute(queries.MARK_CUSTOMER_DELETED, obj["id"], event["created"])
        return Effects()
    return await store.apply_customer(conn, obj, event["created"], ctx.refetch, ctx.default_tenant)


async def checkout_completed(ctx: Context, conn: asyncpg.Connection, event: Obj) -> Effects:
    session = _obj(event)
    cus = convert.ref(session.get("customer"))
    effects = Effects()
    if cus is None:
        return effects
    md = convert.metadata(session)
    tenant = md.get(convert.META_TENANT) or ctx.default_tenant
    external = session.get("client_reference_id") or md.get(convert.META_CUSTOMER)
    if external:
        effects.merge(await store.link_customer(conn, cus, tenant, str(external)))
    else:
        await conn.execute(queries.ENSURE_CUSTOMER, cus, tenant)
    sub_id = convert.ref(session.get("subscription"))
    if sub_id:
        # The session names the subscription only by id: store Stripe's current copy.
        sub = await ctx.refetch("subscription", sub_id)
        if sub is not None:
            effects.merge(
                await store.apply_subscription(
                    conn, sub, event["created"], _fixed(sub), ctx.default_tenant, ctx.upkeep
                )
            )
    return effects


def _fixed(obj: Obj) -> Refetch:
    """A refetch that answers with an object just fetched (no second round trip)."""

    async def refetch(kind: str, id_: str) -> Obj | None:
        return obj

    return refetch


async def _priced(ctx: Context, conn: asyncpg.Connection, price: Obj) -> Obj:
    """A tiered price as a webhook brings it (never with its tiers: they come only when
    expanded) completed with its tiers from Stripe, unless they are stored already."""
    if not price.get("tiers_mode") or price.get("tiers") is not None:
        return price
    if await conn.fetchval(queries.PRICE_HAS_TIERS, price["id"]):
        return price
    fresh = await ctx.refetch("price", price["id"])  # the gateway expands `tiers`
    if fresh is None or fresh.get("tiers") is None:
        log.warning("price tiers not available", extra={"price": price["id"]})
        return price
    return {**price, "tiers": fresh["tiers"]}


async def _with_item_tiers(ctx: Context, conn: asyncpg.Connection, sub: Obj) -> Obj:
    """The subscription with its items' tiered prices completed (see `_priced`)."""
    items = (sub.get("items") or {}).get("data") or []
    priced = [
        {**i, "price": await _priced(ctx, conn, i["price"])}
        if isinstance(i.get("price"), dict)
        else i
        for i in items
    ]
    if priced == items:
        return sub
    return {**sub, "items": {**sub["items"], "data": priced}}


async def subscription(ctx: Context, conn: asyncpg.Connection, event: Obj) -> Effects:
    obj = await _with_item_tiers(ctx, conn, _obj(event))
    effects = await store.apply_subscription(
        conn, obj, event["created"], ctx.refetch, ctx.default_tenant, ctx.upkeep
    )
    if event["type"] == "customer.subscription.trial_will_end":
        log.info(
            "trial ends soon", extra={"subscription": obj["id"], "trial_end": obj.get("trial_end")}
        )
    return effects


async def invoice(ctx: Context, conn: asyncpg.Connection, event: Obj) -> Effects:
    obj = _obj(event)
    kind = event["type"]
    if kind == "invoice.upcoming" or not obj.get("id"):
        # A preview of the next invoice: nothing to store (it has no id), only to note.
        log.info("invoice upcoming", extra={"customer": convert.ref(obj.get("customer"))})
        return Effects()
    effects = await store.apply_invoice(conn, obj, event["created"], ctx.refetch)
    sub = convert.invoice_subscription(obj)
    at = convert.ts(event["created"])
    if kind == "invoice.payment_failed":
        effects.payments.append("failed")
        await conn.execute(
            queries.RECORD_PAYMENT_FAILURE,
            event["id"],
            obj["id"],
            sub,
            convert.ref(obj["customer"]),
            int(obj.get("attempt_count") or 0),
            int(obj.get("amount_due") or 0),
            at,
        )
        status = await conn.fetchval(queries.INVOICE_STATUS, obj["id"])
        # A failure delivered after the invoice was paid opens no dunning.
        if sub is not None and status != "paid":
            await conn.execute(
                queries.START_DUNNING, sub, convert.ref(obj["customer"]), obj["id"], at
            )
    elif kind == "invoice.paid":
        effects.payments.append("succeeded")
        if sub is not None:
            await conn.execute(queries.RESOLVE_DUNNING, sub, obj["id"], at)
    return effects


async def invoice_item(ctx: Context, conn: asyncpg.Connection, event: Obj) -> Effects:
    deleted = event["type"] == "invoiceitem.deleted"
    return await store.apply_invoice_item(conn, _obj(event), event["created"], deleted)


async def catalog(ctx: Context, conn: asyncpg.Connection, event: Obj) -> Effects:
    obj = _obj(event)
    created = event["created"]
    if event["type"].startswith("product."):
        if event["type"] == "product.deleted":
            obj = {**obj, "deleted": True}
        return await store.apply_product(conn, obj, created, ctx.refetch)
    if event["type"].startswith("price."):
        if event["type"] != "price.deleted":
            obj = await _priced(ctx, conn, obj)
        return await store.apply_price(conn, obj, created, ctx.refetch)
    return await store.apply_meter(conn, obj, created, ctx.refetch, ctx.default_tenant)


async def meter_error_report(ctx: Context, conn: asyncpg.Connection, event: Obj) -> Effects:
    """Stripe rejected usage it had accepted (v2 thin event): record it for the operator.

    The thin payload names the meter in `related_object`; `data.reason` (present when the event
    was fetched in full) says why and how many."""
    related: Mapping[str, Any] = event.get("related_object") or {}
    data: Mapping[str, Any] = event.get("data") or {}
    reason: Mapping[str, Any] = data.get("reason") or {}
    types = reason.get("error_types") or []
    first: Mapping[str, Any] = types[0] if types else {}
    count = int(reason.get("error_count") or sum(int(t.get("error_count") or 0) for t in types))
    await conn.execute(
        queries.RECORD_METER_ERROR,
        event["id"],
        related.get("id"),
        first.get("code"),
        count,
        data.get("developer_message_summary"),
        orjson.dumps(event).decode(),
    )
    log.warning(
        "stripe rejected usage",
        extra={"meter": related.get("id"), "code": first.get("code"), "events": count},
    )
    return Effects(payments=[])


HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": checkout_completed,
    "customer.created": customer,
    "customer.updated": customer,
    "customer.deleted": customer,
    **{
        f"customer.subscription.{t}": subscription
        for t in ("created", "updated", "deleted", "paused", "resumed", "trial_will_end")
    },
    **{
        f"invoice.{t}": invoice
        for t in (
            "created",
            "finalized",
            "paid",
            "payment_succeeded",
            "payment_failed",
            "upcoming",
            "voided",
            "marked_uncollectible",
        )
    },
    # No `invoiceitem.updated`: Stripe has no such event type (the API's `enabled_events`).
    **{f"invoiceitem.{t}": invoice_item for t in ("created", "deleted")},
    **{f"product.{t}": catalog for t in ("created", "updated", "deleted")},
    **{f"price.{t}": catalog for t in ("created", "updated", "deleted")},
    **{f"billing.meter.{t}": catalog for t in ("created", "updated", "deactivated", "reactivated")},
    "v1.billing.meter.error_report_triggered": meter_error_report,
    # Usage for an event name no meter has: the same report, with no meter to name.
    "v1.billing.meter.no_meter_found": meter_error_report,
}
METER_ERROR_EVENTS = frozenset(
    ("v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found")
)


def meter_error_count(event: Obj) -> tuple[str, int]:
    """(error code, rejected events) of a meter error report, for the metric."""
    reason = (event.get("data") or {}).get("reason") or {}
    types = reason.get("error_types") or []
    code = str(types[0].get("code")) if types else "unknown"
    return code, int(reason.get("error_count") or 0)
