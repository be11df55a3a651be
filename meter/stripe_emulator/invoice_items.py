"""Pending invoice items of subscriptions: the prorations (and, in flexible billing mode, the
usage of a metered price taken off an item) that a change leaves for the next invoice.

Stripe keeps them as InvoiceItem objects without an invoice until an invoice takes them; `GET
/v1/invoiceitems?pending=true` lists them (docs.stripe.com/api/invoiceitems/list) and each is
announced by `invoiceitem.created`. Once an invoice takes one, its `invoice` is set.
"""

from __future__ import annotations

from typing import Any

from meter.stripe_emulator.core import Req, Route
from meter.stripe_emulator.wire import Obj, bool_param, new_id, paginate

BASE = "/v1/invoiceitems"


def routes() -> list[Route]:
    return [Route("GET", BASE, list_), Route("GET", BASE + "/{id}", retrieve)]


def pend(emu: Any, sub: Obj, lines: list[Obj], now: int) -> list[Obj]:
    """Record each line as a pending invoice item of `sub` and return the lines, each naming its
    item (`parent.subscription_item_details.invoice_item`), as the next invoice will show them."""
    for ln in lines:
        details = ln["parent"]["subscription_item_details"]
        item: Obj = {
            "id": new_id("ii", 24),
            "object": "invoiceitem",
            "amount": ln["amount"],
            "currency": ln["currency"],
            "customer": sub["customer"],
            "date": now,
            "description": ln["description"],
            "discountable": ln["discountable"],
            "discounts": [],
            "invoice": None,
            "livemode": False,
            "metadata": {},
            "parent": {
                "type": "subscription_details",
                "subscription_details": {
                    "subscription": sub["id"],
                    "subscription_item": details["subscription_item"],
                },
            },
            "period": dict(ln["period"]),
            "pricing": ln["pricing"],
            "proration": details["proration"],
            "quantity": ln["quantity"],
            "tax_rates": [],
            "test_clock": sub.get("test_clock"),
        }
        emu.state.put(item)
        details["invoice_item"] = item["id"]
        emu.emit("invoiceitem.created", item)
    return lines


def attach(state: Any, lines: list[Obj], invoice_id: str) -> None:
    """The invoice `invoice_id` takes the pending items among its lines."""
    for ln in lines:
        ident = ((ln.get("parent") or {}).get("subscription_item_details") or {}).get(
            "invoice_item"
        )
        found = state.find(ident) if ident else None
        if found is not None and found["object"] == "invoiceitem":
            found["invoice"] = invoice_id


def retrieve(req: Req) -> Obj:
    return req.state.get("invoiceitem", req.match["id"])


def list_(req: Req) -> Obj:
    found = req.state.all("invoiceitem")
    if customer := req.get("customer"):
        found = [i for i in found if i["customer"] == customer]
    if invoice := req.get("invoice"):
        found = [i for i in found if i["invoice"] == invoice]
    if "pending" in req.params:
        pending = bool_param(req.params, "pending")
        found = [i for i in found if (i["invoice"] is None) == pending]
    return paginate(found, req.params, BASE)
