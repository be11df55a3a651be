"""The emulator bills a subscription's lifecycle as Stripe documents it: usage of a trial is not
charged, a subscription that ends with its period renews nothing, and paused collection leaves
invoices drafts, marks them uncollectible or voids them."""

from __future__ import annotations

import time
from typing import Any

import pytest
import stripe

HOUR = 3600


def _catalog(client: stripe.StripeClient) -> dict[str, Any]:
    """A metered price (2 cents a call) on meter `calls` and a licensed one (20.00)."""
    meter = client.v1.billing.meters.create(
        {"display_name": "Calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )
    product = client.v1.products.create({"name": "Pro"})
    metered = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 2,
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
    return {"metered": metered.id, "base": base.id}


def _start(
    client: stripe.StripeClient, start: int, **sub: Any
) -> tuple[str, str, stripe.Subscription]:
    cat = _catalog(client)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": start})
    cus = client.v1.customers.create({"email": "l@example.com", "test_clock": clock.id}).id
    items = [{"price": cat["metered"]}, {"price": cat["base"]}]
    created = client.v1.subscriptions.create({"customer": cus, "items": items, **sub})
    return clock.id, cus, created


def _calls(client: stripe.StripeClient, cus: str, ident: str, value: int, at: int) -> None:
    client.v1.billing.meter_events.create(
        {
            "event_name": "calls",
            "timestamp": at,
            "identifier": ident,
            "payload": {"stripe_customer_id": cus, "value": str(value)},
        }
    )


def _cycle_invoices(client: stripe.StripeClient, cus: str) -> list[stripe.Invoice]:
    invoices = client.v1.invoices.list({"customer": cus}).data
    return [i for i in invoices if i.billing_reason == "subscription_cycle"]


def test_usage_of_a_trial_is_not_charged(client: stripe.StripeClient) -> None:
    start = int(time.time()) // HOUR * HOUR
    clock, cus, sub = _start(client, start, trial_end=start + 2 * HOUR)
    assert sub.status == "trialing"
    client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": start + HOUR})
    _calls(client, cus, "trial-1", 40, start + HOUR - 60)
    # Previewed during the trial: the usage is shown, charged 0; the first paid period's fee.
    preview = client.v1.invoices.create_preview({"customer": cus})
    assert sorted((line.quantity, line.amount) for line in preview.lines.data) == [
        (1, 2000),
        (40, 0),
    ]
    client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": start + 4 * HOUR})
    # "During the trial period, any usage accrued doesn't count toward the total charged"
    # (docs.stripe.com/billing/subscriptions/trials): the trial's invoice charges the fee only.
    (trial_invoice,) = _cycle_invoices(client, cus)
    assert trial_invoice.status == "paid"
    assert trial_invoice.total == 2000
    # Usage of the paid period is charged; an event stamped in the trial, sent late, is not.
    _calls(client, cus, "paid-1", 10, start + 2 * HOUR + 60)
    _calls(client, cus, "trial-2", 20, start + HOUR)
    preview = client.v1.invoices.create_preview({"customer": cus})
    assert sorted((line.quantity, line.amount) for line in preview.lines.data) == [
        (1, 2000),
        (10, 20),
    ]


def test_a_subscription_ending_with_its_period_renews_nothing(
    client: stripe.StripeClient,
) -> None:
    start = int(time.time()) // HOUR * HOUR
    clock, cus, sub = _start(client, start)
    end = sub["items"].data[0].current_period_end
    client.v1.subscriptions.update(sub.id, {"cancel_at_period_end": True})
    _calls(client, cus, "c-1", 100, start)
    preview = client.v1.invoices.create_preview({"customer": cus})
    assert [(line.quantity, line.amount) for line in preview.lines.data] == [(100, 200)]
    client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": end + 2 * HOUR})
    (final,) = _cycle_invoices(client, cus)
    assert (final.total, preview.total) == (200, 200)
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"


@pytest.mark.parametrize(
    ("behavior", "status", "paid"),
    [
        ("void", "void", 0),
        ("keep_as_draft", "draft", 0),
        ("mark_uncollectible", "uncollectible", 0),
    ],
)
def test_paused_collection_collects_nothing(
    client: stripe.StripeClient, behavior: str, status: str, paid: int
) -> None:
    start = int(time.time()) // HOUR * HOUR
    clock, cus, sub = _start(client, start)
    end = sub["items"].data[0].current_period_end
    client.v1.subscriptions.update(sub.id, {"pause_collection": {"behavior": behavior}})
    _calls(client, cus, "p-1", 100, start)
    client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": end + 2 * HOUR})
    (invoice,) = _cycle_invoices(client, cus)
    assert (invoice.status, invoice.amount_paid, invoice.total) == (status, paid, 2200)
    assert invoice.attempt_count == 0
    if behavior == "keep_as_draft":
        assert invoice.auto_advance is False


def test_paused_collection_resumes_at_its_time(client: stripe.StripeClient) -> None:
    start = int(time.time()) // HOUR * HOUR
    clock, cus, sub = _start(client, start)
    end = sub["items"].data[0].current_period_end
    pause = {"behavior": "void", "resumes_at": end - HOUR}
    client.v1.subscriptions.update(sub.id, {"pause_collection": pause})
    client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": end + 2 * HOUR})
    (invoice,) = _cycle_invoices(client, cus)
    assert (invoice.status, invoice.amount_paid) == ("paid", 2000)
