"""Checkout sessions (subscription mode), billing portal sessions, setup intents.

No browser exists here: `POST /_emulator/checkout/sessions/{id}/complete` does what a customer
paying on the hosted page would do (customer, subscription, `checkout.session.completed`).
"""

from __future__ import annotations

import secrets

from aiohttp import web

from meter.stripe_emulator import control, customers, subscriptions
from meter.stripe_emulator.core import Emulator, Req, Route
from meter.stripe_emulator.resources import metadata_of
from meter.stripe_emulator.wire import (
    Obj,
    invalid,
    missing,
    new_id,
    paginate,
    str_param,
    strip_private,
)


def routes() -> list[Route]:
    return [
        Route("POST", "/v1/checkout/sessions", create_checkout),
        Route("GET", "/v1/checkout/sessions", list_checkout),
        Route("GET", "/v1/checkout/sessions/{id}", retrieve_checkout),
        Route("POST", "/v1/checkout/sessions/{id}/expire", expire_checkout),
        Route("POST", "/v1/billing_portal/sessions", create_portal),
        Route("POST", "/v1/setup_intents", create_setup_intent),
        Route("GET", "/v1/setup_intents", list_setup_intents),
        Route("GET", "/v1/setup_intents/{id}", retrieve_setup_intent),
        Route("POST", "/v1/setup_intents/{id}/cancel", cancel_setup_intent),
    ]


def register_control(app: web.Application) -> None:
    control.extra(app, "POST", "/checkout/sessions/{id}/complete", complete_checkout)


def create_checkout(req: Req) -> Obj:
    mode = req.get("mode") or "payment"
    if mode != "subscription":
        raise invalid("The emulator supports checkout sessions in subscription mode only.", "mode")
    line_items = req.get("line_items")
    if not isinstance(line_items, list) or not line_items:
        raise missing("line_items")
    for i, item in enumerate(line_items):
        req.state.get("price", str(item.get("price")), f"line_items[{i}][price]")
    if customer := req.get("customer"):
        req.state.get("customer", str(customer), "customer")
    session_id = new_id("cs_test", 58)
    session: Obj = {
        "id": session_id,
        "object": "checkout.session",
        "cancel_url": req.get("cancel_url"),
        "client_reference_id": req.get("client_reference_id"),
        "created": req.state.now(),
        "customer": customer or None,
        "customer_email": req.get("customer_email"),
        "expires_at": req.state.now() + 86400,
        "livemode": False,
        "metadata": metadata_of(req),
        "mode": mode,
        "payment_status": "unpaid",
        "status": "open",
        "subscription": None,
        "success_url": req.get("success_url"),
        "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        "_line_items": line_items,
        "_subscription_data": req.get("subscription_data") or {},
    }
    req.state.put(session)
    return session


def retrieve_checkout(req: Req) -> Obj:
    return req.state.get("checkout.session", req.match["id"])


def list_checkout(req: Req) -> Obj:
    found = req.state.all("checkout.session")
    if customer := req.get("customer"):
        found = [s for s in found if s["customer"] == customer]
    return paginate(found, req.params, "/v1/checkout/sessions")


def expire_checkout(req: Req) -> Obj:
    session = req.state.get("checkout.session", req.match["id"])
    if session["status"] != "open":
        raise invalid("Only open sessions can be expired.", None)
    session["status"] = "expired"
    req.emu.emit("checkout.session.expired", session, {"status": "open"})
    return session


async def complete_checkout(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    session = emu.state.get("checkout.session", request.match_info["id"])
    if session["status"] != "open":
        raise invalid("Only open sessions can be completed.", None)
    if not session["customer"]:
        email = body.get("email") or session["customer_email"] or "customer@example.com"
        created = customers.create(Req(emu, {"email": email}, {}))
        session["customer"] = created["id"]
    data = session["_subscription_data"]
    params: Obj = {
        "customer": session["customer"],
        "items": [
            {k: v for k, v in item.items() if k in ("price", "quantity")}
            for item in session["_line_items"]
        ],
        "metadata": data.get("metadata") or {},
        "default_payment_method": new_id("pm"),
    }
    if data.get("trial_period_days"):
        params["trial_period_days"] = data["trial_period_days"]
    sub = subscriptions.create(Req(emu, params, {}))
    session["subscription"] = sub["id"]
    session["status"] = "complete"
    session["payment_status"] = "paid" if sub["status"] == "active" else "no_payment_required"
    emu.emit("checkout.session.completed", session)
    clean: Obj = strip_private(session)
    return clean


def create_portal(req: Req) -> Obj:
    customer = req.state.get("customer", str_param(req.params, "customer"), "customer")
    session_id = new_id("bps")
    session: Obj = {
        "id": session_id,
        "object": "billing_portal.session",
        "configuration": "bpc_emulator",
        "created": req.state.now(),
        "customer": customer["id"],
        "flow": None,
        "livemode": False,
        "locale": None,
        "on_behalf_of": None,
        "return_url": req.get("return_url"),
        "url": f"https://billing.stripe.com/p/session/test_{session_id}",
    }
    req.state.put(session)
    return session


def create_setup_intent(req: Req) -> Obj:
    if customer := req.get("customer"):
        req.state.get("customer", str(customer), "customer")
    intent_id = new_id("seti")
    intent: Obj = {
        "id": intent_id,
        "object": "setup_intent",
        "cancellation_reason": None,
        "client_secret": f"{intent_id}_secret_{secrets.token_urlsafe(18)}",
        "created": req.state.now(),
        "customer": customer or None,
        "description": req.get("description"),
        "last_setup_error": None,
        "livemode": False,
        "metadata": metadata_of(req),
        "payment_method": None,
        "payment_method_types": req.get("payment_method_types") or ["card"],
        "status": "requires_payment_method",
        "usage": req.get("usage") or "off_session",
    }
    req.state.put(intent)
    return intent


def retrieve_setup_intent(req: Req) -> Obj:
    return req.state.get("setup_intent", req.match["id"])


def list_setup_intents(req: Req) -> Obj:
    found = req.state.all("setup_intent")
    if customer := req.get("customer"):
        found = [s for s in found if s["customer"] == customer]
    return paginate(found, req.params, "/v1/setup_intents")


def cancel_setup_intent(req: Req) -> Obj:
    intent = req.state.get("setup_intent", req.match["id"])
    if intent["status"] in ("succeeded", "canceled"):
        raise invalid(f"This SetupIntent is {intent['status']} and cannot be canceled.", None)
    intent["status"] = "canceled"
    intent["cancellation_reason"] = req.get("cancellation_reason") or "requested_by_customer"
    return intent
