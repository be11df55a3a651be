"""Billing through the SDK: prices, subscriptions, previews, test clocks, invoices, webhooks."""

from __future__ import annotations

import time
from typing import Any

import pytest
import stripe

from meter.stripe_emulator import pricing

from .conftest import Env, wait_for

DAY = 86400


def _catalog(client: stripe.StripeClient) -> dict[str, Any]:
    meter = client.v1.billing.meters.create(
        {"display_name": "Calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )
    product = client.v1.products.create({"name": "Pro"})
    metered = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [
                {"up_to": 1000, "unit_amount": 0, "flat_amount": 500},
                {"up_to": "inf", "unit_amount_decimal": "0.5"},
            ],
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    base = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 2000,
            "recurring": {"interval": "month"},
        }
    )
    return {"meter": meter, "metered": metered, "base": base, "product": product}


def _clock_customer(client: stripe.StripeClient, start: int) -> tuple[str, str]:
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": start, "name": "t"})
    customer = client.v1.customers.create({"email": "c@example.com", "test_clock": clock.id})
    return clock.id, customer.id


def test_price_shapes(client: stripe.StripeClient, env: Env) -> None:
    cat = _catalog(client)
    assert cat["metered"].recurring.usage_type == "metered"
    assert cat["metered"].recurring.meter == cat["meter"].id
    # Tiers are includable: left out unless the request expands them (any depth, never in an
    # event's payload).
    assert "tiers" not in cat["metered"]
    metered = client.v1.prices.retrieve(cat["metered"].id, {"expand": ["tiers"]})
    assert metered.tiers[1].up_to is None
    assert "tiers" not in client.v1.prices.retrieve(cat["metered"].id)
    listed = client.v1.prices.list({"expand": ["data.tiers"]}).data
    assert [p.tiers[0].flat_amount for p in listed if p.id == metered.id] == [500]
    assert all("tiers" not in p for p in client.v1.prices.list().data)
    _, customer = _clock_customer(client, 1_790_000_000)
    sub = client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": metered.id}]},
        {"idempotency_key": "tiers-sub"},
    )
    assert "tiers" not in sub["items"].data[0].price
    again = client.v1.subscriptions.retrieve(sub.id, {"expand": ["items.data.price.tiers"]})
    assert again["items"].data[0].price.tiers[0].up_to == 1000
    events = env.control("GET", "/events")["data"]
    prices = [e["data"]["object"] for e in events if e["type"] == "price.created"]
    subs = [e["data"]["object"] for e in events if e["type"] == "customer.subscription.created"]
    assert prices
    assert subs
    assert all("tiers" not in p for p in prices)
    assert all("tiers" not in s["items"]["data"][0]["price"] for s in subs)
    package = client.v1.prices.create(
        {
            "product": cat["product"].id,
            "currency": "usd",
            "unit_amount": 1000,
            "transform_quantity": {"divide_by": 1000, "round": "up"},
        }
    )
    assert package.type == "one_time"
    assert package.transform_quantity.divide_by == 1000
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create(
            {
                "product": cat["product"].id,
                "currency": "usd",
                "unit_amount": 1,
                "recurring": {"interval": "month", "usage_type": "metered"},
            }
        )
    assert exc.value.param == "recurring[meter]"
    coupon = client.v1.coupons.create({"percent_off": 25, "duration": "forever"})
    assert coupon.percent_off == 25


def test_clock_rollover_invoices_and_signed_webhooks(env: Env, client: stripe.StripeClient) -> None:
    endpoint = client.v1.webhook_endpoints.create(
        {"url": env.receiver.url, "enabled_events": ["*"]}
    )
    assert endpoint.secret is not None
    cat = _catalog(client)
    start = int(time.time()) // 3600 * 3600
    clock_id, cus = _clock_customer(client, start)
    sub = client.v1.subscriptions.create(
        {"customer": cus, "items": [{"price": cat["metered"].id}, {"price": cat["base"].id}]}
    )
    assert sub.status == "active"
    period_end = sub["items"].data[0].current_period_end
    assert period_end == pricing.add_interval(start, "month", 1)
    first = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert first.status == "paid"
    assert first.total == 2000
    client.v1.billing.meter_events.create(
        {
            "event_name": "calls",
            "timestamp": start + 10,
            "identifier": "u1",
            "payload": {"stripe_customer_id": cus, "value": "1500"},
        }
    )
    preview = client.v1.invoices.create_preview({"customer": cus})
    # 500 flat for the first 1000, 500 × 0.5 beyond, plus 2000 for next month in advance.
    assert [line.amount for line in preview.lines.data] == [750, 2000]
    assert preview.total == 2750
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": period_end + 2 * 3600})
    invoices = client.v1.invoices.list({"customer": cus})
    cycle = invoices.data[0]
    assert cycle.billing_reason == "subscription_cycle"
    assert cycle.status == "paid"
    assert cycle.total == 2750
    assert cycle.period_start == start
    assert cycle.period_end == period_end
    renewed = client.v1.subscriptions.retrieve(sub.id)
    assert renewed["items"].data[0].current_period_start == period_end
    # Deliveries are asynchronous: wait for the cycle invoice's own `invoice.paid`, not the
    # first invoice's.
    wait_for(
        lambda: any(
            e.type == "invoice.paid" and e.data.object["id"] == cycle.id
            for e in env.receiver.events(endpoint.secret)
        )
    )
    events = env.receiver.events(endpoint.secret)
    types = [e.type for e in events]
    for expected in (
        "customer.subscription.created",
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
    ):
        assert expected in types
    paid = next(e for e in events if e.type == "invoice.paid" and e.data.object["id"] == cycle.id)
    assert paid.api_version == stripe.api_version
    updated = [e for e in events if e.type == "customer.subscription.updated"][-1]
    assert "items" in updated.data.previous_attributes


def test_failed_payment_marks_past_due_then_pay_recovers(
    env: Env, client: stripe.StripeClient
) -> None:
    cat = _catalog(client)
    start = int(time.time()) // 3600 * 3600
    clock_id, cus = _clock_customer(client, start)
    sub = client.v1.subscriptions.create({"customer": cus, "items": [{"price": cat["base"].id}]})
    env.control("POST", "/payments", {"customer": cus, "outcome": "fail"})
    end = sub["items"].data[0].current_period_end
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": end + 2 * 3600})
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    open_invoice = client.v1.invoices.list({"customer": cus, "status": "open"}).data[0]
    with pytest.raises(stripe.CardError) as exc:
        client.v1.invoices.pay(open_invoice.id)
    assert exc.value.code == "card_declined"
    env.control("POST", "/payments", {"customer": cus, "outcome": "succeed"})
    assert client.v1.invoices.pay(open_invoice.id).status == "paid"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    types = [e["type"] for e in env.control("GET", "/events")["data"]]
    assert "invoice.payment_failed" in types
    assert types[-1] == "customer.subscription.updated"


def test_trial_then_cancel_at_period_end(env: Env, client: stripe.StripeClient) -> None:
    cat = _catalog(client)
    start = int(time.time()) // 3600 * 3600
    clock_id, cus = _clock_customer(client, start)
    sub = client.v1.subscriptions.create(
        {"customer": cus, "items": [{"price": cat["base"].id}], "trial_period_days": 7}
    )
    assert sub.status == "trialing"
    assert sub.trial_end == start + 7 * DAY
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": start + 8 * DAY})
    active = client.v1.subscriptions.retrieve(sub.id)
    assert active.status == "active"
    client.v1.subscriptions.update(sub.id, {"cancel_at_period_end": True})
    end = active["items"].data[0].current_period_end
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": end + 3600})
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    types = [e["type"] for e in env.control("GET", "/events")["data"]]
    assert "customer.subscription.trial_will_end" in types
    assert "customer.subscription.deleted" in types


def test_plan_change_preview_and_prorations(client: stripe.StripeClient) -> None:
    cat = _catalog(client)
    bigger = client.v1.prices.create(
        {
            "product": cat["product"].id,
            "currency": "usd",
            "unit_amount": 5000,
            "recurring": {"interval": "month"},
        }
    )
    start = int(time.time()) // 3600 * 3600
    _, cus = _clock_customer(client, start)
    sub = client.v1.subscriptions.create({"customer": cus, "items": [{"price": cat["base"].id}]})
    item = sub["items"].data[0]
    half = start + (item.current_period_end - start) // 2
    change = {
        "items": [{"id": item.id, "price": bigger.id}],
        "proration_behavior": "always_invoice",
        "proration_date": half,
    }
    preview = client.v1.invoices.create_preview(
        {"customer": cus, "subscription": sub.id, "subscription_details": change}
    )
    assert [line.amount for line in preview.lines.data] == [-1000, 2500]
    assert preview.total == 1500
    updated = client.v1.subscriptions.update(sub.id, change)
    assert updated["items"].data[0].price.id == bigger.id
    latest = client.v1.invoices.retrieve(str(updated.latest_invoice))
    assert latest.billing_reason == "subscription_update"
    assert latest.total == 1500


def test_cancel_now_and_pause_collection(client: stripe.StripeClient) -> None:
    cat = _catalog(client)
    cus = client.v1.customers.create({"email": "p@example.com"}).id
    sub = client.v1.subscriptions.create({"customer": cus, "items": [{"price": cat["base"].id}]})
    paused = client.v1.subscriptions.update(sub.id, {"pause_collection": {"behavior": "void"}})
    assert paused.pause_collection is not None
    assert paused.pause_collection.behavior == "void"
    resumed = client.v1.subscriptions.update(sub.id, {"pause_collection": ""})
    assert resumed.pause_collection is None
    assert client.v1.subscriptions.cancel(sub.id).status == "canceled"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.cancel(sub.id)


def test_checkout_portal_setup_intent(env: Env, client: stripe.StripeClient) -> None:
    cat = _catalog(client)
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "line_items": [{"price": cat["base"].id, "quantity": 2}],
            "success_url": "https://example.com/ok",
            "customer_email": "new@example.com",
        }
    )
    assert session.id.startswith("cs_test_")
    assert session.status == "open"
    env.control("POST", f"/checkout/sessions/{session.id}/complete")
    done = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["subscription"]})
    assert done.status == "complete"
    assert done.subscription.status == "active"  # type: ignore[union-attr]
    assert done.subscription["items"].data[0].quantity == 2  # type: ignore[index]
    portal = client.v1.billing_portal.sessions.create({"customer": str(done.customer)})
    assert portal.url.startswith("https://")
    intent = client.v1.setup_intents.create({"customer": str(done.customer)})
    assert intent.status == "requires_payment_method"
    assert intent.client_secret
    types = [e["type"] for e in env.control("GET", "/events")["data"]]
    assert "checkout.session.completed" in types


def test_webhook_retries_until_2xx(env: Env, client: stripe.StripeClient) -> None:
    endpoint = client.v1.webhook_endpoints.create(
        {"url": env.receiver.url, "enabled_events": ["customer.created"]}
    )
    env.receiver.statuses.extend([500, 503])
    client.v1.customers.create({"email": "r@example.com"})
    wait_for(lambda: len(env.receiver.received) == 3)
    assert endpoint.secret is not None
    events = env.receiver.events(endpoint.secret)
    assert {e.id for e in events} == {events[0].id}  # the same event, three attempts
    deliveries = env.control("GET", "/webhooks/deliveries")["data"]
    assert [(d["attempt"], d["status"]) for d in deliveries] == [(1, 500), (2, 503), (3, 200)]
    body, sig = env.receiver.received[0]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, sig, "whsec_wrong")


def test_negative_cycle_usage_bills_zero(client: stripe.StripeClient) -> None:
    """Negative values correct usage; a cycle that nets below zero is billed as 0 units."""
    cat = _catalog(client)
    start = int(time.time()) // 3600 * 3600
    _, cus = _clock_customer(client, start)
    client.v1.subscriptions.create({"customer": cus, "items": [{"price": cat["metered"].id}]})
    for ident, value in (("n1", "1500"), ("n2", "-1000")):
        client.v1.billing.meter_events.create(
            {
                "event_name": "calls",
                "timestamp": start + 10,
                "identifier": ident,
                "payload": {"stripe_customer_id": cus, "value": value},
            }
        )
    # 500 units left: inside the first tier, its 500 flat fee.
    assert [
        ln.quantity for ln in client.v1.invoices.create_preview({"customer": cus}).lines.data
    ] == [500]
    client.v1.billing.meter_events.create(
        {
            "event_name": "calls",
            "timestamp": start + 20,
            "identifier": "n3",
            "payload": {"stripe_customer_id": cus, "value": "-900"},
        }
    )
    lines = client.v1.invoices.create_preview({"customer": cus}).lines.data
    assert [ln.quantity for ln in lines] == [0]


def test_usage_in_the_finalization_grace_is_billed_and_later_usage_is_not(
    client: stripe.StripeClient,
) -> None:
    """Stripe's invoice finalization grace period (docs: usage-based billing, configure grace
    period): usage for the ended period reported during the hour before finalization is on the
    invoice; usage reported after finalization is on no finalized invoice."""
    meter = client.v1.billing.meters.create(
        {"display_name": "Calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )
    product = client.v1.products.create({"name": "API"})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 3,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    start = int(time.time()) // 3600 * 3600
    clock_id, cus = _clock_customer(client, start)
    sub = client.v1.subscriptions.create({"customer": cus, "items": [{"price": price.id}]})
    end = sub["items"].data[0].current_period_end

    def report(identifier: str, value: int, at: int) -> None:
        client.v1.billing.meter_events.create(
            {
                "event_name": "calls",
                "identifier": identifier,
                "timestamp": at,
                "payload": {"stripe_customer_id": cus, "value": str(value)},
            }
        )

    def cycle_invoice() -> Any:
        invoices = client.v1.invoices.list({"customer": cus}).data
        return next(i for i in invoices if i.billing_reason == "subscription_cycle")

    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": end - 3600})
    report("in-period", 10, end - 3600)
    # The period ended 30 minutes ago: the draft exists, finalization is still ahead.
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": end + 1800})
    assert cycle_invoice().status == "draft"
    report("during-grace", 5, end - 60)
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": end + 2 * 3600})
    invoice = cycle_invoice()
    assert invoice.status == "paid"
    assert [(line.quantity, line.amount) for line in invoice.lines.data] == [(15, 45)]
    assert invoice.amount_paid == 45
    # After finalization: not added to that invoice, and not billed in the next period either
    # (its timestamp is in the ended period).
    report("after-finalization", 7, end - 60)
    assert cycle_invoice().total == 45
    preview = client.v1.invoices.create_preview({"customer": cus})
    assert [line.quantity for line in preview.lines.data] == [0]
