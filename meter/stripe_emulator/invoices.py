"""Invoices: retrieve, list, lines, `create_preview`, finalize, pay, void, mark uncollectible."""

from __future__ import annotations

import copy

from meter.stripe_emulator import invoice_lifecycle, subscriptions
from meter.stripe_emulator.core import Req, Route
from meter.stripe_emulator.pricing import add_interval
from meter.stripe_emulator.wire import Obj, invalid, missing, paginate, str_param, strip_private

BASE = "/v1/invoices"


def routes() -> list[Route]:
    return [
        Route("POST", BASE + "/create_preview", create_preview),
        Route("GET", BASE, list_),
        Route("GET", BASE + "/{id}", retrieve),
        Route("GET", BASE + "/{id}/lines", lines),
        Route("POST", BASE + "/{id}/finalize", finalize),
        Route("POST", BASE + "/{id}/pay", pay),
        Route("POST", BASE + "/{id}/void", void),
        Route("POST", BASE + "/{id}/mark_uncollectible", mark_uncollectible),
    ]


def retrieve(req: Req) -> Obj:
    return req.state.get("invoice", req.match["id"])


def lines(req: Req) -> Obj:
    invoice = req.state.get("invoice", req.match["id"])
    url = f"{BASE}/{invoice['id']}/lines"
    return paginate(invoice["lines"]["data"], req.params, url, newest_first=False)


def list_(req: Req) -> Obj:
    found = req.state.all("invoice")
    if customer := req.get("customer"):
        found = [i for i in found if i["customer"] == customer]
    if sub := req.get("subscription"):
        found = [i for i in found if invoice_lifecycle.subscription_of(i) == sub]
    if status := req.get("status"):
        found = [i for i in found if i["status"] == status]
    return paginate(found, req.params, BASE)


def finalize(req: Req) -> Obj:
    invoice = req.state.get("invoice", req.match["id"])
    invoice["_finalize_at"] = None
    invoice_lifecycle.finalize(req.emu, invoice, req.state.now_for_customer(invoice["customer"]))
    return invoice


def pay(req: Req) -> Obj:
    invoice = req.state.get("invoice", req.match["id"])
    invoice["_finalize_at"] = None
    invoice_lifecycle.pay(req.emu, invoice, req.state.now_for_customer(invoice["customer"]))
    return invoice


def void(req: Req) -> Obj:
    invoice = req.state.get("invoice", req.match["id"])
    if invoice["status"] != "open":
        raise invalid("Only open invoices can be voided.", None)
    invoice["status"] = "void"
    invoice["status_transitions"]["voided_at"] = req.state.now_for_customer(invoice["customer"])
    req.emu.emit("invoice.voided", strip_private(invoice), {"status": "open"})
    return invoice


def mark_uncollectible(req: Req) -> Obj:
    invoice = req.state.get("invoice", req.match["id"])
    now = req.state.now_for_customer(invoice["customer"])
    invoice_lifecycle.mark_uncollectible(req.emu, invoice, now)
    return invoice


def create_preview(req: Req) -> Obj:
    """The subscription's next invoice: usage so far, prorations, next period in advance.

    With `subscription_details[items]` it previews a plan change; with
    `proration_behavior=always_invoice` it previews the invoice the change would create now.
    """
    state = req.state
    customer = str_param(req.params, "customer") if req.get("customer") else None
    sub_id = req.get("subscription")
    if not sub_id:
        if customer is None:
            raise missing("customer")
        subs = [
            s
            for s in state.all("subscription")
            if s["customer"] == customer and s["status"] in subscriptions.LIVE
        ]
        if not subs:
            raise invalid(
                "No upcoming invoices for customer: " + customer, None, "invoice_upcoming_none"
            )
        sub_id = subs[-1]["id"]
    sub = copy.deepcopy(state.get("subscription", str(sub_id), "subscription"))
    now = state.now_for_customer(sub["customer"])
    details = req.get("subscription_details") or {}
    behavior = details.get("proration_behavior") or "create_prorations"
    prorations: list[Obj] = []
    if isinstance(details.get("items"), list):
        when = int(details.get("proration_date") or now)
        items, prorations = subscriptions.plan_items(state, sub, details["items"], when, behavior)
        sub["items"]["data"] = items
    if coupon := (req.get("discounts") or [{}])[0].get("coupon") if req.get("discounts") else None:
        sub["_coupon"] = coupon
    start, end = subscriptions.period(sub)
    if behavior == "always_invoice" and prorations:
        body, span, reason = prorations, (now, end), "subscription_update"
    else:
        interval = sub["items"]["data"][0]["price"]["recurring"]
        next_end = add_interval(end, interval["interval"], interval["interval_count"])
        # A subscription that ends with the period renews nothing: no fee in advance.
        renewal = (
            []
            if subscriptions.ends_with_period(sub)
            else subscriptions.licensed_lines(sub, end, next_end)
        )
        body = (
            subscriptions.metered_lines(state, sub, start, end)
            + sub["_pending"]
            + prorations
            + renewal
        )
        span, reason = (start, end), "upcoming"
    return invoice_lifecycle.build(
        state,
        customer=sub["customer"],
        lines=copy.deepcopy(body),
        currency=sub["currency"],
        billing_reason=reason,
        period=span,
        subscription=sub,
        created=now,
        preview=True,
    )
