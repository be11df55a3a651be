"""`billing_cycle_anchor: {type: now}` on a subscription update, as Stripe documents it
(docs.stripe.com/billing/subscriptions/billing-cycle; the object form since API version
2026-09-30): the period ends now and a full one starts now; one invoice bills the ended part's
metered usage in arrears, credits the unused licensed time (unless proration_behavior is none)
and charges the new period's licensed fees in advance."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from meter.stripe_emulator import pricing

DAY = 86400


def _setup(client: stripe.StripeClient, start: int) -> tuple[str, Any, dict[str, str]]:
    meter = client.v1.billing.meters.create(
        {"display_name": "Calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )
    product = client.v1.products.create({"name": "Pro"})
    metered = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 3,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    base = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 3000,
            "recurring": {"interval": "month"},
        }
    )
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": start})
    cus = client.v1.customers.create({"email": "a@example.com", "test_clock": clock.id})
    sub = client.v1.subscriptions.create(
        {"customer": cus.id, "items": [{"price": metered.id}, {"price": base.id}]}
    )
    return clock.id, sub, {"customer": cus.id, "metered": metered.id, "base": base.id}


@pytest.mark.parametrize("behavior", ["create_prorations", "none"])
def test_anchor_reset_ends_the_period_and_invoices_it(
    client: stripe.StripeClient, behavior: str
) -> None:
    start = 1_900_000_000
    clock, sub, ids = _setup(client, start)
    reset = start + 10 * DAY
    # Usage before the reset (billed on its invoice) and one event just after (not billed).
    for i, (at, value) in enumerate([(start + DAY, 40), (reset - 60, 2), (reset + 60, 1000)]):
        client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": min(at, reset)})
        if at > reset:
            updated = client.v1.subscriptions.update(
                sub.id,
                {"billing_cycle_anchor": {"type": "now"}, "proration_behavior": behavior},  # type: ignore[typeddict-item]
            )
        client.v1.billing.meter_events.create(
            {
                "event_name": "calls",
                "timestamp": at,
                "identifier": f"e{i}",
                "payload": {"stripe_customer_id": ids["customer"], "value": str(value)},
            }
        )
    end = pricing.add_interval(reset, "month", 1)
    assert updated.billing_cycle_anchor == reset
    assert {(i.current_period_start, i.current_period_end) for i in updated["items"].data} == {
        (reset, end)
    }
    invoice = client.v1.invoices.retrieve(str(updated.latest_invoice))
    assert invoice.billing_reason == "subscription_update"
    assert (invoice.period_start, invoice.period_end) == (start, reset)
    lines = {
        (
            ln.pricing.price_details.price,
            ln.parent.subscription_item_details.proration,
            ln.amount,
        )
        for ln in invoice.lines.data
    }
    # The ended part's usage (40 + 2, at 3 each; the event after the reset is the new period's),
    # the new period's fee in advance, and with prorations the old period's unused time credited.
    expected = {(ids["metered"], False, 126), (ids["base"], False, 3000)}
    if behavior == "create_prorations":
        old_end = pricing.add_interval(start, "month", 1)
        credit = pricing.prorate(3000, old_end - reset, old_end - start)
        expected.add((ids["base"], True, -credit))
    assert lines == expected


def test_anchor_type_must_be_now_or_unchanged(client: stripe.StripeClient) -> None:
    _, sub, _ = _setup(client, 1_900_000_000)
    unchanged = client.v1.subscriptions.update(
        sub.id,
        {"billing_cycle_anchor": {"type": "unchanged"}},  # type: ignore[typeddict-item]
    )
    assert unchanged.billing_cycle_anchor == 1_900_000_000
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.update(
            sub.id,
            {"billing_cycle_anchor": {"type": "later"}},  # type: ignore[typeddict-item]
        )
    assert err.value.param == "billing_cycle_anchor[type]"
