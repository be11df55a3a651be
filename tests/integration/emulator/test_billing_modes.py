"""The emulator bills a price change inside a period as Stripe documents it, by billing mode
(docs.stripe.com/billing/subscriptions/usage-based/manage-billing-setup, "Update prices
mid-cycle"), and keeps prorations as pending invoice items (docs.stripe.com/api/invoiceitems/list).
"""

from __future__ import annotations

import pytest
import stripe

from .conftest import Env

HOUR = 3600
DAY = 86400
START = 1_767_225_600  # 2026-01-01 00:00 UTC


def _prices(client: stripe.StripeClient) -> tuple[str, str, str]:
    meter = client.v1.billing.meters.create(
        {"display_name": "Calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )
    product = client.v1.products.create({"name": "API"}).id
    a, b = (
        client.v1.prices.create(
            {
                "product": product,
                "currency": "usd",
                "unit_amount": cents,
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            }
        ).id
        for cents in (2, 5)
    )
    flat = client.v1.prices.create(
        {
            "product": product,
            "currency": "usd",
            "unit_amount": 3000,
            "recurring": {"interval": "month"},
        }
    ).id
    return a, b, flat


def _usage(client: stripe.StripeClient, customer: str, value: int, at: int, ident: str) -> None:
    client.v1.billing.meter_events.create(
        {
            "event_name": "calls",
            "timestamp": at,
            "identifier": ident,
            "payload": {"stripe_customer_id": customer, "value": str(value)},
        }
    )


@pytest.mark.parametrize(("mode", "billed"), [("classic", 50), ("flexible", 250)])
def test_a_price_change_bills_the_old_price_by_billing_mode(
    client: stripe.StripeClient, env: Env, mode: str, billed: int
) -> None:
    a, b, _ = _prices(client)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": START}).id
    cus = client.v1.customers.create({"test_clock": clock}).id
    sub = client.v1.subscriptions.create(
        {"customer": cus, "items": [{"price": a}], "billing_mode": {"type": mode}}
    )
    assert sub["billing_mode"]["type"] == mode
    _usage(client, cus, 100, START + 60, "before")
    client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": START + HOUR})
    item = sub["items"]["data"][0]["id"]
    client.v1.subscriptions.update(sub.id, {"items": [{"id": item, "price": b}]})
    _usage(client, cus, 10, START + HOUR + 60, "after")
    # Reported after the change, from before it: billed by neither price.
    _usage(client, cus, 1000, START + 120, "late")
    preview = client.v1.invoices.create_preview({"customer": cus, "subscription": sub.id})
    assert preview.total == billed

    pending = client.v1.invoice_items.list({"customer": cus, "pending": True}).data
    assert [(i.amount, i.period.start, i.period.end) for i in pending] == (
        [] if mode == "classic" else [(200, START, START + HOUR)]
    )
    # The cycle invoice, finalized after the grace period, takes the pending item as it was.
    end = sub["items"]["data"][0]["current_period_end"]
    client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": end + 2 * HOUR})
    [invoice] = [
        i
        for i in client.v1.invoices.list({"customer": cus}).data
        if i.billing_reason == "subscription_cycle"
    ]
    assert invoice.status != "draft"
    assert invoice.total == billed
    assert client.v1.invoice_items.list({"customer": cus, "pending": True}).data == []
    taken = client.v1.invoice_items.list({"customer": cus, "pending": False}).data
    assert [i.invoice for i in taken] == ([] if mode == "classic" else [invoice.id])


def test_an_item_added_mid_period_bills_usage_from_when_it_was_added(
    client: stripe.StripeClient, env: Env
) -> None:
    _, b, flat = _prices(client)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": START}).id
    cus = client.v1.customers.create({"test_clock": clock}).id
    sub = client.v1.subscriptions.create({"customer": cus, "items": [{"price": flat}]})
    _usage(client, cus, 100, START + 60, "before")
    client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": START + HOUR})
    updated = client.v1.subscriptions.update(sub.id, {"items": [{"price": b}]})
    [added] = [i for i in updated["items"]["data"] if i["price"]["id"] == b]
    assert added["created"] == START + HOUR
    _usage(client, cus, 10, START + HOUR + 60, "after")
    preview = client.v1.invoices.create_preview({"customer": cus, "subscription": sub.id})
    metered = [ln for ln in preview.lines.data if ln["pricing"]["price_details"]["price"] == b]
    assert [(ln.quantity, ln.amount, ln.period.start) for ln in metered] == [(10, 50, START + HOUR)]


def test_prorations_wait_as_pending_invoice_items(client: stripe.StripeClient, env: Env) -> None:
    _, _, flat = _prices(client)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": START}).id
    cus = client.v1.customers.create({"test_clock": clock}).id
    sub = client.v1.subscriptions.create(
        {"customer": cus, "items": [{"price": flat, "quantity": 1}]}
    )
    client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": START + 10 * DAY})
    item = sub["items"]["data"][0]["id"]
    client.v1.subscriptions.update(sub.id, {"items": [{"id": item, "quantity": 2}]})
    pending = client.v1.invoice_items.list({"customer": cus, "pending": True}).data
    # 21 of January's 31 days left: of 30.00 (credit) and of 60.00, halves rounded up.
    assert sorted(i.amount for i in pending) == [-2032, 4065]
    assert {i["parent"]["subscription_details"]["subscription"] for i in pending} == {sub.id}
    assert all(i.proration and i.invoice is None for i in pending)
    announced = [
        e["data"]["object"]["id"]
        for e in env.emu.state.all("event")
        if e["type"] == "invoiceitem.created"
    ]
    assert sorted(announced) == sorted(i.id for i in pending)


def test_an_unknown_billing_mode_is_refused(client: stripe.StripeClient, env: Env) -> None:
    a, _, _ = _prices(client)
    cus = client.v1.customers.create({}).id
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.subscriptions.create(
            {"customer": cus, "items": [{"price": a}], "billing_mode": {"type": "hybrid"}}
        )
    assert info.value.param == "billing_mode[type]"
