"""Subscriptions and their items: create (with trials), update with prorations, cancel, resume.

Since API version 2025-03-31 the billing period lives on each item (`current_period_start/end`),
not on the subscription; the emulator follows the pinned version. Private bookkeeping (coupon,
pending proration lines) sits under `_` keys that never reach the wire.
"""

from __future__ import annotations

import contextlib
import copy
from decimal import Decimal
from typing import Any

from meter.stripe_emulator import invoice_items, invoice_lifecycle, pricing
from meter.stripe_emulator.core import Req, Route
from meter.stripe_emulator.resources import apply_updates, metadata_of
from meter.stripe_emulator.state import State
from meter.stripe_emulator.wire import (
    Obj,
    StripeError,
    bool_param,
    invalid,
    missing,
    new_id,
    paginate,
    str_param,
    strip_private,
)

BASE = "/v1/subscriptions"
LIVE = ("trialing", "active", "past_due", "incomplete", "unpaid", "paused")


def routes() -> list[Route]:
    return [
        Route("POST", BASE, create),
        Route("GET", BASE, list_),
        Route("GET", BASE + "/{id}", retrieve),
        Route("POST", BASE + "/{id}", update),
        Route("DELETE", BASE + "/{id}", cancel),
        Route("POST", BASE + "/{id}/resume", resume),
        Route("GET", "/v1/subscription_items", list_items),
        Route("GET", "/v1/subscription_items/{id}", retrieve_item),
    ]


def public_sub(sub: Obj) -> Obj:
    public: Obj = strip_private(sub)
    return public


def period(sub: Obj) -> tuple[int, int]:
    first = sub["items"]["data"][0]
    return first["current_period_start"], first["current_period_end"]


def _interval(price: Obj) -> tuple[str, int]:
    recurring = price.get("recurring")
    if not recurring:
        raise invalid("A subscription needs recurring prices.", "items")
    return recurring["interval"], recurring["interval_count"]


def _item(
    state: State,
    raw: dict[str, Any],
    sub_id: str,
    period: tuple[int, int],
    i: int,
    added: int | None = None,
) -> Obj:
    """A new subscription item of the period `period`, added at `added` (default: its start).
    Its metered price bills usage from when it was added (`_usage_from`), not from the period's
    start (docs.stripe.com/billing/subscriptions/usage-based/manage-billing-setup, "Update
    prices mid-cycle")."""
    start, end = period
    added = start if added is None else added
    price_id = raw.get("price")
    if not price_id:
        raise missing(f"items[{i}][price]")
    price = state.get("price", str(price_id), f"items[{i}][price]")
    metered = invoice_lifecycle.is_metered(price)
    if metered and raw.get("quantity") not in (None, ""):
        raise invalid("Quantity cannot be set for metered prices.", f"items[{i}][quantity]")
    return {
        "id": new_id("si", 14),
        "object": "subscription_item",
        "created": added,
        "current_period_end": end,
        "current_period_start": start,
        "discounts": [],
        "metadata": raw.get("metadata") or {},
        "price": copy.deepcopy(price),
        "tax_rates": tax_rates(state, raw.get("tax_rates"), f"items[{i}][tax_rates]"),
        "quantity": None if metered else int(raw.get("quantity") or 1),
        "subscription": sub_id,
        "_usage_from": added,
    }


def licensed_lines(sub: Obj, start: int, end: int) -> list[Obj]:
    lines = []
    for item in sub["items"]["data"]:
        if not invoice_lifecycle.is_metered(item["price"]):
            lines.append(
                invoice_lifecycle.line(
                    item["price"],
                    Decimal(item["quantity"]),
                    (start, end),
                    subscription=sub["id"],
                    item=item["id"],
                )
            )
    return lines


def metered_lines(state: State, sub: Obj, start: int, end: int) -> list[Obj]:
    """The metered items' usage of [start, end) in arrears (charged 0 in a trial)."""
    lines = []
    for item in sub["items"]["data"]:
        if invoice_lifecycle.is_metered(item["price"]):
            # The item's price bills usage since it was set on the item (a later period starts
            # after that, so the period's start then).
            since = max(start, min(item.get("_usage_from") or start, end))
            lines.append(
                invoice_lifecycle.metered_line(
                    state, item["price"], sub["customer"], (since, end), sub, item["id"]
                )
            )
    return lines


def ends_with_period(sub: Obj) -> bool:
    """Whether the subscription ends at its current period's end (`cancel_at_period_end`, or
    `cancel_at` up to it): the invoice closing the period renews nothing."""
    end = period(sub)[1]
    return bool(sub["cancel_at_period_end"] or (sub.get("cancel_at") and sub["cancel_at"] <= end))


def create(req: Req) -> Obj:
    state = req.state
    customer = state.get("customer", str_param(req.params, "customer"), "customer")
    raw_items = req.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise missing("items")
    now = state.now_for_customer(customer["id"])
    trial_end = _trial_end(req, now)
    sub_id = new_id("sub", 24)
    prices = [
        state.get("price", str(r.get("price")), f"items[{i}][price]")
        for i, r in enumerate(raw_items)
    ]
    intervals = {_interval(p) for p in prices}
    if len(intervals) > 1:
        raise invalid(
            "All prices on a subscription must have the same recurring interval.", "items"
        )
    interval, count = intervals.pop()
    end = trial_end or pricing.add_interval(now, interval, count)
    items = [_item(state, r, sub_id, (now, end), i) for i, r in enumerate(raw_items)]
    coupon = req.get("coupon") or _discount_coupon(req.get("discounts"))
    if coupon:
        state.get("coupon", str(coupon), "coupon")
    sub: Obj = {
        "id": sub_id,
        "object": "subscription",
        "billing_cycle_anchor": end if trial_end else now,
        "billing_mode": billing_mode(req.get("billing_mode"), now),
        "cancel_at": None,
        "cancel_at_period_end": bool_param(req.params, "cancel_at_period_end"),
        "canceled_at": None,
        "collection_method": "charge_automatically",
        "created": now,
        "currency": prices[0]["currency"],
        "customer": customer["id"],
        "default_payment_method": req.get("default_payment_method"),
        "default_tax_rates": tax_rates(state, req.get("default_tax_rates"), "default_tax_rates"),
        "discounts": [],
        "ended_at": None,
        "items": {
            "object": "list",
            "data": items,
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        "latest_invoice": None,
        "livemode": False,
        "metadata": metadata_of(req),
        "pause_collection": None,
        "start_date": now,
        "status": "trialing" if trial_end else "incomplete",
        "test_clock": customer.get("test_clock"),
        "trial_end": trial_end,
        "trial_settings": req.get("trial_settings")
        or {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": now if trial_end else None,
        "_coupon": coupon,
        "_pending": [],
        "_trial_will_end_sent": False,
    }
    if coupon:
        sub["discounts"] = [attach_discount(state, sub, str(coupon), now)]
    state.put(sub)
    for item in items:
        state.put(item)
    req.emu.emit("customer.subscription.created", public_sub(sub))
    invoice = _invoice_now(
        req,
        sub,
        licensed_lines(sub, now, end) if not trial_end else [],
        "subscription_create",
        (now, now),
    )
    # A failed first payment leaves the subscription incomplete, as in Stripe.
    with contextlib.suppress(StripeError):
        invoice_lifecycle.pay(req.emu, invoice, now)
    if sub["status"] == "incomplete" and invoice["status"] == "paid":
        sub["status"] = "active"
        req.emu.emit("customer.subscription.updated", public_sub(sub), {"status": "incomplete"})
    return sub


def billing_mode(raw: Any, now: int) -> Obj:
    """The subscription's `billing_mode`: flexible unless `billing_mode[type]=classic` (flexible
    is the default of subscriptions created through the API since 2025-09-30.clover:
    docs.stripe.com/changelog/clover/2025-09-30/billing-mode-default-flexible)."""
    kind = "flexible"
    if raw not in (None, ""):
        kind = str(raw.get("type") if isinstance(raw, dict) else None)
        if kind not in ("classic", "flexible"):
            raise invalid(
                "Invalid billing_mode[type]: must be one of classic or flexible",
                "billing_mode[type]",
            )
    flexible = {"proration_discounts": "included"} if kind == "flexible" else None
    return {"type": kind, "flexible": flexible, "updated_at": now}


def is_flexible(sub: Obj) -> bool:
    return bool((sub.get("billing_mode") or {}).get("type") == "flexible")


def tax_rates(state: State, raw: Any, param: str) -> list[Obj]:
    """Tax rate ids (a list, or "" to clear) as the TaxRate objects Stripe embeds."""
    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise invalid("Invalid array", param)
    return [copy.deepcopy(state.get("tax_rate", str(r), param)) for r in raw]


def attach_discount(state: State, sub: Obj, coupon_id: str, start: int) -> str:
    """A Discount object (Stripe's application of a coupon to this subscription, from `start`);
    the subscription lists it by id in `discounts`, expandable (`expand[]=discounts`)."""
    coupon = state.get("coupon", coupon_id, "coupon")
    end = None
    if coupon.get("duration") == "repeating":
        end = pricing.add_interval(start, "month", int(coupon.get("duration_in_months") or 0))
    discount: Obj = {
        "id": new_id("di", 24),
        "object": "discount",
        "checkout_session": None,
        "customer": sub["customer"],
        "end": end,
        "invoice": None,
        "invoice_item": None,
        "promotion_code": None,
        "source": {"coupon": coupon_id, "type": "coupon"},
        "start": start,
        "subscription": sub["id"],
        "subscription_item": None,
    }
    state.put(discount)
    return str(discount["id"])


def _discount_coupon(discounts: Any) -> str | None:
    if isinstance(discounts, list) and discounts and isinstance(discounts[0], dict):
        coupon = discounts[0].get("coupon")
        return str(coupon) if coupon else None
    return None


def _trial_end(req: Req, now: int) -> int | None:
    if (raw := req.get("trial_end")) not in (None, ""):
        if raw == "now":
            return None
        end = int(raw)
        if end <= now:
            raise invalid("trial_end must be in the future.", "trial_end")
        return end
    if days := req.get("trial_period_days"):
        return now + int(days) * 86400
    return None


def _invoice_now(req: Req, sub: Obj, lines: list[Obj], reason: str, span: tuple[int, int]) -> Obj:
    now = req.state.now_for_customer(sub["customer"])
    invoice = invoice_lifecycle.build(
        req.state,
        customer=sub["customer"],
        lines=lines,
        currency=sub["currency"],
        billing_reason=reason,
        period=span,
        subscription=sub,
        created=now,
    )
    req.state.put(invoice)
    sub["latest_invoice"] = invoice["id"]
    req.emu.emit("invoice.created", strip_private(invoice))
    return invoice


def retrieve(req: Req) -> Obj:
    return req.state.get("subscription", req.match["id"])


def list_(req: Req) -> Obj:
    subs = req.state.all("subscription")
    if customer := req.get("customer"):
        subs = [s for s in subs if s["customer"] == customer]
    status = req.get("status")
    if status and status != "all":
        subs = [s for s in subs if s["status"] == status]
    elif not status:
        subs = [s for s in subs if s["status"] != "canceled"]
    return paginate(subs, req.params, BASE)


def plan_items(
    state: State, sub: Obj, raw_items: list[dict[str, Any]], now: int, behavior: str
) -> tuple[list[Obj], list[Obj]]:
    """New item list and proration lines for an items update, without changing anything.

    A metered price taken off an item (replaced or the item deleted) stops billing at `now`:
    in flexible billing mode its usage reported so far is billed at once by an invoice item
    (unless proration_behavior is none); in classic mode it is not billed at all. The new price
    bills usage from `now` (docs.stripe.com/billing/subscriptions/usage-based/
    manage-billing-setup, "Update prices mid-cycle")."""
    items = {i["id"]: copy.deepcopy(i) for i in sub["items"]["data"]}
    start, end = period(sub)
    prorations: list[Obj] = []
    remaining, length = max(end - now, 0), end - start
    for n, raw in enumerate(raw_items):
        old = items.get(str(raw.get("id"))) if raw.get("id") else None
        if raw.get("id") and old is None:
            raise invalid(f"No such subscription item: '{raw['id']}'", f"items[{n}][id]")
        new: Obj | None
        if old is None:
            new = _item(state, raw, sub["id"], (start, end), n, added=now)
        elif bool_param(raw, "deleted"):
            new = None
        else:
            new = copy.deepcopy(old)
            if raw.get("price"):
                new["price"] = copy.deepcopy(
                    state.get("price", str(raw["price"]), f"items[{n}][price]")
                )
            if raw.get("quantity") not in (None, "") and not invoice_lifecycle.is_metered(
                new["price"]
            ):
                new["quantity"] = int(raw["quantity"])
            if invoice_lifecycle.is_metered(new["price"]):
                new["quantity"] = None
            if "tax_rates" in raw:
                new["tax_rates"] = tax_rates(state, raw["tax_rates"], f"items[{n}][tax_rates]")
        repriced = new is None or (old is not None and new["price"]["id"] != old["price"]["id"])
        if old is not None and invoice_lifecycle.is_metered(old["price"]) and repriced:
            prorations += _metered_until(state, sub, old, now, behavior)
        if old is not None and new is not None and repriced:
            new["_usage_from"] = now
        if behavior != "none" and sub["status"] != "trialing":
            prorations += _proration(sub, old, new, remaining, length, (now, end))
        if old is not None:
            del items[old["id"]]
        if new is not None:
            items[new["id"]] = new
    return list(items.values()), prorations


def _metered_until(state: State, sub: Obj, item: Obj, now: int, behavior: str) -> list[Obj]:
    """The line that bills a metered price's usage up to `now`, when it leaves the item: only
    in flexible billing mode and unless proration_behavior is none (classic mode bills none of
    it). Its quantity is fixed now: usage reported later is in no invoice."""
    if not is_flexible(sub) or behavior == "none" or sub["status"] == "trialing":
        return []
    start, end = period(sub)
    since = max(start, min(item.get("_usage_from") or start, end))
    until = min(max(now, since), end)
    qty = invoice_lifecycle.usage(state, item["price"], sub["customer"], since, until)
    line = invoice_lifecycle.line(
        item["price"], qty, (since, until), subscription=sub["id"], item=item["id"]
    )
    line["_fixed"] = True  # never refreshed at finalization (invoice_lifecycle.refresh_usage)
    return [line]


def _proration(
    sub: Obj, old: Obj | None, new: Obj | None, remaining: int, length: int, span: tuple[int, int]
) -> list[Obj]:
    lines = []
    for item, sign, label in ((old, -1, "Unused time on"), (new, 1, "Remaining time on")):
        if item is None or invoice_lifecycle.is_metered(item["price"]):
            continue
        qty = Decimal(item["quantity"])
        full = pricing.amount(pricing.PriceModel.from_price(item["price"]), qty)
        share = pricing.prorate(full, remaining, length)
        lines.append(
            invoice_lifecycle.line(
                item["price"],
                qty,
                span,
                subscription=sub["id"],
                item=item["id"],
                amount=sign * share,
                proration=True,
                description=f"{label} {item['quantity']} × {item['price']['id']}",
            )
        )
    if (
        old
        and new
        and old["price"]["id"] == new["price"]["id"]
        and old["quantity"] == new["quantity"]
    ):
        return []
    return lines


def update(req: Req) -> Obj:
    state = req.state
    sub = state.get("subscription", req.match["id"])
    if sub["status"] == "canceled":
        raise invalid(
            "A canceled subscription can only update its cancellation_details and metadata."
        )
    now = state.now_for_customer(sub["customer"])
    previous = apply_updates(req, sub, ("default_payment_method",), ("cancel_at_period_end",))
    if "pause_collection" in req.params:
        raw = req.params["pause_collection"]
        value = (
            None
            if raw == ""
            else {"behavior": raw.get("behavior"), "resumes_at": raw.get("resumes_at")}
        )
        previous["pause_collection"] = sub["pause_collection"]
        sub["pause_collection"] = value
    if "default_tax_rates" in req.params:
        previous["default_tax_rates"] = sub["default_tax_rates"]
        sub["default_tax_rates"] = tax_rates(
            state, req.params["default_tax_rates"], "default_tax_rates"
        )
    if (coupon := req.get("coupon")) not in (None,):
        previous["discounts"] = sub["discounts"]
        if coupon:
            state.get("coupon", str(coupon), "coupon")
        sub["_coupon"] = coupon or None
        sub["discounts"] = [attach_discount(state, sub, str(coupon), now)] if coupon else []
    reset = _anchor_reset(req.get("billing_cycle_anchor"))
    if isinstance(raw_items := req.get("items"), list):
        behavior = req.get("proration_behavior") or "create_prorations"
        when = int(req.get("proration_date") or now)
        items, prorations = plan_items(state, sub, raw_items, when, behavior)
        previous["items"] = copy.deepcopy(sub["items"])
        for item in items:
            if item["id"] not in state.objects:
                state.put(item)
            else:
                state.objects[item["id"]].update(item)
        sub["items"]["data"] = items
        if behavior == "always_invoice" and prorations:
            invoice = _invoice_now(
                req, sub, prorations, "subscription_update", (now, period(sub)[1])
            )
            # A failure is reported through invoice.payment_failed and the past_due status.
            with contextlib.suppress(StripeError):
                invoice_lifecycle.pay(req.emu, invoice, now)
        else:
            sub["_pending"].extend(invoice_items.pend(req.emu, sub, prorations, now))
    reset_invoice = _reset_cycle(req, sub, now, previous) if reset else None
    if previous:
        req.emu.emit("customer.subscription.updated", public_sub(sub), previous)
    if reset_invoice is not None:
        _invoice_reset(req, sub, *reset_invoice, now)
    return sub


def _anchor_reset(raw: Any) -> bool:
    """`billing_cycle_anchor` of an update: `{type: now}` resets the cycle, `{type: unchanged}`
    keeps it (the object form of API versions from 2026-09-30; the string "now" of older ones
    is accepted too)."""
    if raw in (None, ""):
        return False
    kind = raw.get("type") if isinstance(raw, dict) else raw
    if kind not in ("now", "unchanged"):
        raise invalid(
            "Invalid billing_cycle_anchor[type]: must be one of now or unchanged",
            "billing_cycle_anchor[type]",
        )
    return bool(kind == "now")


def _reset_cycle(req: Req, sub: Obj, now: int, previous: Obj) -> tuple[list[Obj], tuple[int, int]]:
    """Reset the billing cycle to `now`: the current period ends now and a full one starts
    (docs.stripe.com/billing/subscriptions/billing-cycle, "Reset the billing cycle anchor"). The
    lines of the invoice Stripe creates at once: metered usage of the ended part of the period in
    arrears, pending prorations, credit for the unused licensed time (unless proration_behavior
    is none), and the new period's licensed fees in advance."""
    if sub["status"] not in ("active", "past_due"):
        raise invalid(
            "The billing cycle anchor can be reset only on an active subscription.",
            "billing_cycle_anchor",
        )
    start, end = period(sub)
    behavior = req.get("proration_behavior") or "create_prorations"
    lines = metered_lines(req.state, sub, start, now)
    lines += sub["_pending"]
    sub["_pending"] = []
    if behavior != "none":
        for item in sub["items"]["data"]:
            lines += _proration(sub, item, None, max(end - now, 0), end - start, (now, end))
    interval, count = _interval(sub["items"]["data"][0]["price"])
    new_end = pricing.add_interval(now, interval, count)
    previous.setdefault("items", copy.deepcopy(sub["items"]))
    previous["billing_cycle_anchor"] = sub["billing_cycle_anchor"]
    for item in sub["items"]["data"]:
        item["current_period_start"], item["current_period_end"] = now, new_end
        if item["id"] in req.state.objects:
            req.state.objects[item["id"]].update(item)
    sub["billing_cycle_anchor"] = now
    return lines + licensed_lines(sub, now, new_end), (start, now)


def _invoice_reset(req: Req, sub: Obj, lines: list[Obj], span: tuple[int, int], now: int) -> None:
    """The reset's invoice, a draft finalized after the grace period like a cycle invoice, so
    usage of the ended period reported meanwhile is still billed on it."""
    from meter.stripe_emulator import billing_cycle

    billing_cycle.draft(req.emu, sub, lines, "subscription_update", span, now)


def cancel(req: Req) -> Obj:
    """Cancel now (https://docs.stripe.com/api/subscriptions/cancel). `invoice_now` (default
    false) bills the period's un-invoiced metered usage and pending prorations on a final
    invoice, `prorate` (default false) adds the credit for the unused licensed time; with both
    false the pending prorations are removed and the usage is billed nowhere. The final invoice
    is a draft finalized after the grace period like every invoice
    (https://docs.stripe.com/billing/subscriptions/usage-based/configure-grace-period)."""
    sub = req.state.get("subscription", req.match["id"])
    if sub["status"] == "canceled":
        raise invalid("This subscription has already been canceled.", None)
    invoice_now = bool_param(req.params, "invoice_now")
    prorate = bool_param(req.params, "prorate")
    if prorate and not invoice_now:
        # Stripe leaves the credit as a pending invoice item of the customer; the emulator
        # keeps no such items, so it refuses rather than drop a credit.
        raise invalid("The emulator supports `prorate` only with `invoice_now`.", "prorate")
    now = req.state.now_for_customer(sub["customer"])
    start, end = period(sub)
    lines: list[Obj] = []
    if invoice_now:
        lines = metered_lines(req.state, sub, start, now) + sub["_pending"]
        if prorate and sub["status"] != "trialing":
            for item in sub["items"]["data"]:
                lines += _proration(sub, item, None, max(end - now, 0), end - start, (now, end))
    sub["_pending"] = []
    end_now(req.emu, sub, now)
    if invoice_now:
        from meter.stripe_emulator import billing_cycle

        billing_cycle.draft(req.emu, sub, lines, "subscription_update", (start, now), now)
    return sub


def end_now(emu: Any, sub: Obj, now: int) -> None:
    previous = {"status": sub["status"]}
    sub["status"] = "canceled"
    sub["canceled_at"] = sub["canceled_at"] or now
    sub["ended_at"] = now
    emu.emit("customer.subscription.deleted", public_sub(sub), previous)


def resume(req: Req) -> Obj:
    sub = req.state.get("subscription", req.match["id"])
    if sub["status"] != "paused":
        raise invalid("Only a paused subscription can be resumed.", None)
    now = req.state.now_for_customer(sub["customer"])
    interval, count = _interval(sub["items"]["data"][0]["price"])
    end = pricing.add_interval(now, interval, count)
    for item in sub["items"]["data"]:
        item["current_period_start"], item["current_period_end"] = now, end
    sub["status"] = "active"
    req.emu.emit("customer.subscription.resumed", public_sub(sub), {"status": "paused"})
    invoice = _invoice_now(
        req, sub, licensed_lines(sub, now, end), "subscription_cycle", (now, now)
    )
    with contextlib.suppress(StripeError):
        invoice_lifecycle.pay(req.emu, invoice, now)
    return sub


def list_items(req: Req) -> Obj:
    sub_id = str_param(req.params, "subscription")
    sub = req.state.get("subscription", sub_id, "subscription")
    return paginate(sub["items"]["data"], req.params, "/v1/subscription_items", newest_first=False)


def retrieve_item(req: Req) -> Obj:
    item = req.state.get("subscription_item", req.match["id"])
    sub = req.state.get("subscription", item["subscription"])
    current: Obj = next((i for i in sub["items"]["data"] if i["id"] == item["id"]), item)
    return current
