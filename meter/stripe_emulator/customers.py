"""Customers: create, retrieve, update, list, delete, search by metadata/email."""

from __future__ import annotations

import re

from meter.stripe_emulator.core import Req, Route
from meter.stripe_emulator.resources import apply_updates, deleted, metadata_of
from meter.stripe_emulator.wire import Obj, invalid, new_id, paginate

BASE = "/v1/customers"
FIELDS = ("email", "name", "description", "phone", "address", "shipping", "invoice_prefix")
# Stripe search syntax, the subset meter uses: metadata['k']:'v' and email:'x' joined by AND.
_CLAUSE = re.compile(
    r"""(metadata\[['"](?P<key>[^'"]+)['"]\]|(?P<field>\w+))\s*:\s*['"](?P<value>[^'"]*)['"]"""
)


def routes() -> list[Route]:
    return [
        Route("POST", BASE, create),
        Route("GET", BASE, list_),
        Route("GET", BASE + "/search", search),
        Route("GET", BASE + "/{id}", retrieve),
        Route("POST", BASE + "/{id}", update),
        Route("DELETE", BASE + "/{id}", delete),
    ]


def create(req: Req) -> Obj:
    clock = req.get("test_clock")
    if clock:
        req.state.get("test_helpers.test_clock", str(clock), "test_clock")
    settings = req.get("invoice_settings") or {}
    customer: Obj = {
        "id": new_id("cus", 14),
        "object": "customer",
        "address": req.get("address"),
        "balance": int(req.get("balance") or 0),
        "created": 0,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": req.get("description"),
        "discount": None,
        "email": req.get("email"),
        "invoice_prefix": req.get("invoice_prefix") or new_id("x", 8)[2:].upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": settings.get("default_payment_method"),
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": metadata_of(req),
        "name": req.get("name"),
        "phone": req.get("phone"),
        "preferred_locales": [],
        "shipping": req.get("shipping"),
        "tax_exempt": "none",
        "test_clock": clock or None,
    }
    req.state.put(customer)
    customer["created"] = req.state.now_for_customer(customer["id"])
    req.emu.emit("customer.created", customer)
    return customer


def retrieve(req: Req) -> Obj:
    customer = req.state.objects.get(req.match["id"])
    if customer is not None and customer["object"] == "customer" and customer.get("deleted"):
        return deleted(customer)
    return req.state.get("customer", req.match["id"])


def update(req: Req) -> Obj:
    customer = req.state.get("customer", req.match["id"])
    previous = apply_updates(req, customer, FIELDS)
    if isinstance(settings := req.get("invoice_settings"), dict):
        current = dict(customer["invoice_settings"])
        if "default_payment_method" in settings:
            previous["invoice_settings"] = dict(current)
            current["default_payment_method"] = settings["default_payment_method"] or None
            customer["invoice_settings"] = current
    if previous:
        req.emu.emit("customer.updated", customer, previous)
    return customer


def delete(req: Req) -> Obj:
    """ "Permanently deletes a customer. It cannot be undone. Also immediately cancels any
    active subscriptions on the customer." (https://docs.stripe.com/api/customers/delete): each
    live subscription ends now, as a cancel without `invoice_now` (its un-invoiced usage is
    billed nowhere), before the customer goes."""
    from meter.stripe_emulator import subscriptions

    customer = req.state.get("customer", req.match["id"])
    now = req.state.now_for_customer(customer["id"])
    for sub in req.state.all("subscription"):
        if sub["customer"] == customer["id"] and sub["status"] in subscriptions.LIVE:
            sub["_pending"] = []
            subscriptions.end_now(req.emu, sub, now)
    req.state.delete(customer["id"])
    req.emu.emit("customer.deleted", customer)
    return deleted(customer)


def list_(req: Req) -> Obj:
    customers = req.state.all("customer")
    if email := req.get("email"):
        customers = [c for c in customers if c.get("email") == email]
    if clock := req.get("test_clock"):
        customers = [c for c in customers if c.get("test_clock") == clock]
    return paginate(customers, req.params, BASE)


def search(req: Req) -> Obj:
    query = str(req.get("query") or "")
    clauses = list(_CLAUSE.finditer(query))
    if not clauses:
        raise invalid("Unsupported search query.", "query")
    found = []
    for customer in req.state.all("customer"):
        ok = True
        for m in clauses:
            if m["key"]:
                ok = ok and customer["metadata"].get(m["key"]) == m["value"]
            else:
                ok = ok and str(customer.get(m["field"]) or "") == m["value"]
        if ok:
            found.append(customer)
    page = paginate(found, {"limit": req.get("limit", 10)}, BASE + "/search")
    return {
        "object": "search_result",
        "data": page["data"],
        "has_more": page["has_more"],
        "next_page": None,
        "url": BASE + "/search",
    }
