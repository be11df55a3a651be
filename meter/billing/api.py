"""The self-service API under /v1/customers/{id}/…: subscription, checkout, portal, plan changes,
cancel/resume, card updates, entitlements. API-key auth and JSON errors as in the ingest API.

Every Stripe call carries an idempotency key built from our record ids, the action and the
record's version (the `created` of the last event applied to it): a retried request replays the
same Stripe call, while the same action on a changed record (cancel, resume, cancel again) is a
new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from meter import appkeys, jsonwire
from meter.auth import authenticate
from meter.billing import convert, queries, store, views
from meter.billing.errors import Conflict, NotFound
from meter.billing.gateway import CheckoutRequest, Obj, PlanChange
from meter.billing.rules import LIVE_STATUSES
from meter.billing.service import Billing
from meter.bodies import json_object, read_body
from meter.errors import InvalidRequest
from meter.ingest.validation import too_deep
from meter.names import key_part

PRORATION_BEHAVIORS = ("create_prorations", "always_invoice", "none")
# Request bodies here are flat objects with a list of prices at most; deeper nesting is refused
# while parsing, before any Stripe call (orjson, which digests a body for its idempotency key,
# cannot write past 254 levels).
MAX_BODY_DEPTH = 16
LIVE = tuple(sorted(LIVE_STATUSES))


def idempotency_key(*parts: object) -> str:
    """`meter:<action>:<ids…>`, hashed when long (Stripe allows 255 characters). Each part is
    escaped (meter/names.py), so ids holding `:` cannot make two actions' keys equal."""
    key = "meter:" + ":".join(key_part(str(p)) for p in parts)
    if len(key) <= 200:
        return key
    return f"meter:{parts[0]}:{hashlib.sha256(key.encode()).hexdigest()}"


def digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _billing(request: web.Request) -> Billing:
    return request.app[appkeys.BILLING]


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request)
    if not raw.strip():
        return {}
    doc = json_object(raw)
    if too_deep(doc, MAX_BODY_DEPTH):
        raise InvalidRequest(f"the body nests too deep (more than {MAX_BODY_DEPTH} levels)")
    return doc


def _str(doc: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"`{name}` is required", param=name)
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"`{name}` must be a non-empty string", param=name)
    return value


def _int(doc: dict[str, Any], name: str) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRequest(f"`{name}` must be a non-negative integer", param=name)
    return value


def _bool(doc: dict[str, Any], name: str, default: bool = False) -> bool:
    value = doc.get(name, default)
    if not isinstance(value, bool):
        raise InvalidRequest(f"`{name}` must be true or false", param=name)
    return value


def _minute() -> int:
    # Sessions that expire within minutes (portal, setup intent) are replayed to retries within
    # the same minute and created afresh after it.
    return int(time.time()) // 60


async def _live_subscription(
    conn: asyncpg.Connection, customer: asyncpg.Record
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    sub, items, _ = await views.subscription_state(conn, customer)
    if sub is None or sub["status"] not in LIVE:
        raise NotFound(f"customer {customer['external_id']!r} has no live subscription")
    return sub, items


async def _store_and_respond(
    billing: Billing, obj: Obj, version: int, tenant: str, key: str
) -> web.Response:
    """Store the subscription Stripe just answered with and answer from the same transaction,
    so the caller sees the state its change produced, not a webhook that raced it."""
    async with billing.connection() as conn:
        async with conn.transaction():
            effects = await store.apply_subscription_answer(
                conn,
                obj,
                version,
                billing.refetch,
                billing.settings.billing_default_tenant,
                billing.upkeep,
            )
            customer = await views.customer_row(conn, tenant, key)
            sub, items, dunning = await views.subscription_state(conn, customer)
        await billing.after_commit(conn, effects)
    if sub is None:
        raise NotFound(f"customer {key!r} has no subscription")
    return jsonwire.response(views.subscription_doc(customer, sub, items, dunning))


async def _subscription_response(billing: Billing, tenant: str, key: str) -> web.Response:
    async with billing.connection() as conn:
        customer = await views.customer_row(conn, tenant, key)
        sub, items, dunning = await views.subscription_state(conn, customer)
    if sub is None:
        raise NotFound(f"customer {key!r} has no subscription")
    return jsonwire.response(views.subscription_doc(customer, sub, items, dunning))


async def get_subscription(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    return await _subscription_response(_billing(request), tenant, request.match_info["id"])


async def _ensure_customer(
    billing: Billing, tenant: str, key: str, email: str | None
) -> asyncpg.Record:
    """Our customer's Stripe customer, created (once, whatever the retries) if missing."""
    async with billing.connection() as conn:
        row = await conn.fetchrow(queries.CUSTOMER_BY_KEY, tenant, key)
        if row is not None:
            return row
        # A customer who comes back after their Stripe customer was deleted gets a new one: the
        # key names the deleted one, else a retry within Stripe's 24 h would replay it.
        gone = await conn.fetchval(queries.DELETED_EXTERNAL_ID_OWNER, tenant, key)
    if key.startswith(convert.STRIPE_CUSTOMER_PREFIX):
        # A `cus_` id names an existing Stripe customer, never a new one of ours: creating one
        # under it would shadow another tenant's customer. Same answer as for any unknown id.
        raise NotFound(f"no billing customer {key!r}", param="id")
    parts = ("customer-create", tenant, key) + (() if gone is None else (gone,))
    obj = await billing.gateway.create_customer(
        email=email,
        metadata={convert.META_CUSTOMER: key, convert.META_TENANT: tenant},
        idempotency_key=idempotency_key(*parts),
    )

    async def same(kind: str, id_: str) -> Obj | None:
        return obj

    async with billing.connection() as conn:
        async with conn.transaction():
            await store.apply_customer(
                conn, obj, int(obj["created"]), same, billing.settings.billing_default_tenant
            )
        return await views.customer_row(conn, tenant, key)


async def _refuse_second_subscription(billing: Billing, customer: asyncpg.Record, key: str) -> None:
    """A checkout completed next to a live subscription starts a second one, and Stripe bills
    every meter event on each subscription whose price uses that meter: the customer would pay
    twice. A plan change is what was meant, unless the caller asks for a second one."""
    async with billing.connection() as conn:
        live = await conn.fetch(queries.SUBSCRIPTIONS_IN, customer["stripe_id"], list(LIVE))
    if live:
        sub = live[0]
        raise Conflict(
            f"customer {key!r} already has a live subscription {sub['id']} ({sub['status']}): "
            f"change its plan with POST /v1/customers/{key}/subscription/change-plan; to start "
            'another subscription anyway, send "additional_subscription": true (metered prices '
            "on the same meter then bill the same usage on each subscription)",
            param="additional_subscription",
        )


async def checkout_session(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    billing = _billing(request)
    key = request.match_info["id"]
    doc = await _body(request)
    raw_prices = doc.get("prices") or ([doc["price"]] if doc.get("price") else None)
    if not isinstance(raw_prices, list) or not raw_prices:
        raise InvalidRequest("`prices` must be a non-empty list of price ids", param="prices")
    prices: list[tuple[str, int | None]] = []
    for p in raw_prices:
        if isinstance(p, str):
            prices.append((p, None))
        elif isinstance(p, dict) and isinstance(p.get("price"), str):
            prices.append((p["price"], _int(p, "quantity")))
        else:
            raise InvalidRequest("each price is an id or {price, quantity}", param="prices")
    success_url = _str(doc, "success_url", required=True)
    assert success_url is not None
    additional = _bool(doc, "additional_subscription")
    cancel_url, trial_days = _str(doc, "cancel_url"), _int(doc, "trial_days")
    body_digest = digest([prices, doc])
    # Everything above is the whole body's validation: a refused request creates nothing.
    customer = await _ensure_customer(billing, tenant, key, _str(doc, "email"))
    if not additional:
        await _refuse_second_subscription(billing, customer, key)
    req = CheckoutRequest(
        customer=customer["stripe_id"],
        prices=prices,
        success_url=success_url,
        cancel_url=cancel_url,
        client_reference_id=customer["external_id"],
        metadata={convert.META_CUSTOMER: customer["external_id"], convert.META_TENANT: tenant},
        trial_days=trial_days,
    )
    session = await billing.gateway.create_checkout_session(
        req,
        idempotency_key("checkout", customer["stripe_id"], body_digest, customer["event_created"]),
    )
    return jsonwire.response({"id": session["id"], "url": session["url"]})


async def portal_session(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    billing = _billing(request)
    doc = await _body(request)
    return_url = _str(doc, "return_url")
    async with billing.connection() as conn:
        customer = await views.customer_row(conn, tenant, request.match_info["id"])
    session = await billing.gateway.create_portal_session(
        customer["stripe_id"],
        return_url,
        idempotency_key("portal", customer["stripe_id"], digest(return_url), _minute()),
    )
    return jsonwire.response({"url": session["url"]})


async def setup_intent(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    billing = _billing(request)
    async with billing.connection() as conn:
        customer = await views.customer_row(conn, tenant, request.match_info["id"])
    intent = await billing.gateway.create_setup_intent(
        customer["stripe_id"], idempotency_key("setup-intent", customer["stripe_id"], _minute())
    )
    return jsonwire.response({"id": intent["id"], "client_secret": intent["client_secret"]})


def _pick_item(items: list[asyncpg.Record], wanted: str | None) -> str:
    if wanted is not None:
        if not any(i["id"] == wanted for i in items):
            raise InvalidRequest(f"no item {wanted!r} in the subscription", param="item")
        return wanted
    licensed = [i for i in items if i["usage_type"] != "metered"]
    candidates = licensed if len(licensed) == 1 else items
    if len(candidates) != 1:
        raise InvalidRequest("the subscription has several items; name one in `item`", param="item")
    return str(candidates[0]["id"])


async def change_plan(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    billing = _billing(request)
    key = request.match_info["id"]
    doc = await _body(request)
    price = _str(doc, "price", required=True)
    assert price is not None
    behavior = _str(doc, "proration_behavior") or "create_prorations"
    if behavior not in PRORATION_BEHAVIORS:
        raise InvalidRequest(
            f"`proration_behavior` is one of {', '.join(PRORATION_BEHAVIORS)}",
            param="proration_behavior",
        )
    async with billing.connection() as conn:
        customer = await views.customer_row(conn, tenant, key)
        sub, items = await _live_subscription(conn, customer)
        version = await conn.fetchval(queries.SUBSCRIPTION_VERSION, sub["id"])
    change = PlanChange(
        subscription=sub["id"],
        item=_pick_item(items, _str(doc, "item")),
        price=price,
        quantity=_int(doc, "quantity"),
        proration_behavior=behavior,
        proration_date=_int(doc, "proration_date"),
    )
    if _bool(doc, "preview"):
        return jsonwire.response(await _preview(billing, change))
    obj = await billing.gateway.change_plan(
        change,
        idempotency_key(
            "change-plan",
            sub["id"],
            change.item,
            price,
            change.quantity,
            behavior,
            change.proration_date,
            version,
        ),
    )
    return await _store_and_respond(billing, obj, version, tenant, key)


async def _preview(billing: Billing, change: PlanChange) -> dict[str, Any]:
    """Stripe's own numbers: what the change charges now, and the next regular invoice."""
    preview = await billing.gateway.preview_change(change)
    prorations = [
        line
        for line in preview.lines
        if ((line.get("parent") or {}).get("subscription_item_details") or {}).get("proration")
    ]
    # The instant Stripe prorated at: pass it back as `proration_date` to be charged exactly this.
    proration_date = min((int(line["period"]["start"]) for line in prorations), default=None)
    if change.proration_behavior == "always_invoice":
        now_due = preview.amount_due
        upcoming = await billing.gateway.preview_change(
            dataclasses.replace(change, proration_behavior="none")
        )
    else:
        now_due, upcoming = 0, preview
    return {
        "currency": preview.currency,
        "proration_behavior": change.proration_behavior,
        "proration_date": proration_date,
        "amount_due_now": now_due,
        "proration_lines": [
            {"amount": line["amount"], "description": line.get("description")}
            for line in prorations
        ],
        "next_invoice": {
            "amount_due": upcoming.amount_due,
            "total": upcoming.total,
            "period_start": upcoming.period_start,
            "period_end": upcoming.period_end,
        },
    }


def _final_invoice(doc: dict[str, Any], immediately: bool) -> tuple[bool, bool]:
    """`invoice_now` and `prorate` of a cancel now. meter invoices by default: the period's
    metered usage is billed on a final invoice, where Stripe's default (false) bills it
    nowhere. `prorate` (credit for unused licensed time) stays opt-in as in Stripe, and only
    on that final invoice: left pending, the credit would wait for the customer's next invoice,
    which may never come."""
    for name in ("invoice_now", "prorate"):
        if name in doc and not immediately:
            raise InvalidRequest(
                f"`{name}` applies to a cancel with `immediately`: true; a cancel at period "
                "end is billed by the period's own invoice",
                param=name,
            )
    invoice_now = immediately and _bool(doc, "invoice_now", default=True)
    prorate = _bool(doc, "prorate")
    if prorate and not invoice_now:
        raise InvalidRequest(
            "`prorate` needs `invoice_now`: the credit is put on the final invoice",
            param="prorate",
        )
    return invoice_now, prorate


async def cancel(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    billing = _billing(request)
    key = request.match_info["id"]
    doc = await _body(request)
    immediately = _bool(doc, "immediately")
    invoice_now, prorate = _final_invoice(doc, immediately)
    async with billing.connection() as conn:
        customer = await views.customer_row(conn, tenant, key)
        sub, _ = await _live_subscription(conn, customer)
        version = await conn.fetchval(queries.SUBSCRIPTION_VERSION, sub["id"])
    if sub["cancel_at_period_end"] and not immediately:
        return await _subscription_response(billing, tenant, key)
    mode = f"now-{int(invoice_now)}{int(prorate)}" if immediately else "period-end"
    obj = await billing.gateway.cancel(
        sub["id"],
        at_period_end=not immediately,
        invoice_now=invoice_now,
        prorate=prorate,
        idempotency_key=idempotency_key("cancel", sub["id"], mode, version),
    )
    return await _store_and_respond(billing, obj, version, tenant, key)


async def resume(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    billing = _billing(request)
    key = request.match_info["id"]
    async with billing.connection() as conn:
        customer = await views.customer_row(conn, tenant, key)
        sub, _ = await _live_subscription(conn, customer)
        version = await conn.fetchval(queries.SUBSCRIPTION_VERSION, sub["id"])
    paused = sub["status"] == "paused"
    if not paused and not sub["cancel_at_period_end"]:
        raise Conflict("the subscription is neither paused nor set to cancel")
    obj = await billing.gateway.resume(
        sub["id"],
        paused=paused,
        idempotency_key=idempotency_key("resume", sub["id"], version),
    )
    return await _store_and_respond(billing, obj, version, tenant, key)


async def entitlements(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    billing = _billing(request)
    async with billing.connection() as conn:
        customer = await views.customer_row(conn, tenant, request.match_info["id"])
        doc = await views.entitlements_doc(
            conn,
            tenant,
            customer,
            grace_s=billing.settings.billing_grace_period_s,
            now=int(time.time()),
        )
    return jsonwire.response(doc)
