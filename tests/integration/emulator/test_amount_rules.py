"""Emulator rules that change an amount, each as Stripe documents it (README, "Where the
emulator differs from Stripe on amounts"), through the official SDK."""

from __future__ import annotations

import time

import pytest
import stripe

from .conftest import Env

HOUR = 3600
DAY = 86400


def _event(
    client: stripe.StripeClient, name: str, cus: str, value: str, ts: int, ident: str
) -> None:
    client.v1.billing.meter_events.create(
        {
            "event_name": name,
            "payload": {"stripe_customer_id": cus, "value": value},
            "timestamp": ts,
            "identifier": ident,
        }
    )


def test_a_pre_aggregated_meter_keeps_the_last_event_received_per_window(
    client: stripe.StripeClient, env: Env
) -> None:
    """`event_time_window`: "Stripe only uses the most recent meter event within the hourly or
    daily window for aggregation. A newer event sent within the same hourly or daily window
    overwrites the previous one" — deltas sent to such a meter are not summed."""
    meter = client.v1.billing.meters.create(
        {
            "display_name": "hourly",
            "event_name": "hourly",
            "default_aggregation": {"formula": "sum"},
            "event_time_window": "hour",
        }
    )
    cus = client.v1.customers.create({"email": "w@example.com"}).id
    now = int(time.time())
    start = now - now % HOUR - 2 * HOUR
    _event(client, "hourly", cus, "5", start + 600, "a")
    _event(client, "hourly", cus, "3", start + 60, "b")  # sent later, earlier in the window
    _event(client, "hourly", cus, "7", start + HOUR + 5, "c")
    totals = env.control("GET", f"/meters/{meter.id}/totals")["totals"]
    assert totals == {cus: 10}
    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id,
        {
            "customer": cus,
            "start_time": start,
            "end_time": start + 2 * HOUR,
            "value_grouping_window": "hour",
        },
    )
    assert [s.aggregated_value for s in summaries.data] == [7, 3]


def test_a_package_price_needs_its_rounding(client: stripe.StripeClient) -> None:
    """`transform_quantity` requires both `divide_by` and `round` (API reference, create a
    price); a price without `round` would otherwise bill packages by a guessed rounding."""
    product = client.v1.products.create({"name": "calls"})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create(
            {
                "product": product.id,
                "currency": "usd",
                "unit_amount": 100,
                "transform_quantity": {"divide_by": 10},  # type: ignore[typeddict-item]
            }
        )
    assert exc.value.http_status == 400
    assert exc.value.param == "transform_quantity[round]"


def test_adjustments_count_24_hours_from_receipt_not_from_the_customers_clock(
    client: stripe.StripeClient, env: Env
) -> None:
    """ "You can only cancel events within 24 hours of Stripe receiving them": a customer on a
    test clock a month ahead does not get a longer window."""
    meter = client.v1.billing.meters.create(
        {"display_name": "c", "event_name": "clocked", "default_aggregation": {"formula": "sum"}}
    )
    ahead = int(time.time()) + 30 * DAY
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": ahead})
    cus = client.v1.customers.create({"email": "k@example.com", "test_clock": clock.id}).id
    _event(client, "clocked", cus, "4", ahead, "late-cancel")
    env.control("POST", "/clock/advance", {"seconds": DAY + 60})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meter_event_adjustments.create(
            {"event_name": "clocked", "type": "cancel", "cancel": {"identifier": "late-cancel"}}
        )
    assert "24 hours" in str(exc.value.user_message)
    assert env.control("GET", f"/meters/{meter.id}/totals")["totals"] == {cus: 4}


def test_a_once_coupon_discounts_one_invoice_when_its_usage_arrives_in_the_grace_hour(
    client: stripe.StripeClient,
) -> None:
    """A `once` coupon "applies to a single invoice" (API reference, coupon object `duration`).
    A draft made with nothing to discount takes the coupon when usage reported in the grace hour
    gives it a positive subtotal at finalization; the next invoice is then at full price."""
    start = 1_900_000_000
    meter = client.v1.billing.meters.create(
        {"display_name": "calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )
    product = client.v1.products.create({"name": "api"})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 10,
            "recurring": {"interval": "day", "usage_type": "metered", "meter": meter.id},
        }
    )
    coupon = client.v1.coupons.create({"percent_off": 50, "duration": "once"})
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": start})
    cus = client.v1.customers.create({"email": "o@example.com", "test_clock": clock.id})
    client.v1.subscriptions.create(
        {"customer": cus.id, "items": [{"price": price.id}], "discounts": [{"coupon": coupon.id}]}
    )
    end = start + DAY
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": end + HOUR // 2})
    _event(client, "calls", cus.id, "10", end - 60, "grace")  # period 0, in the grace hour
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": end + HOUR + 60})
    first = [i for i in client.v1.invoices.list({"customer": cus.id}).data if i.period_end == end]
    assert [(i.status, i.subtotal, i.total) for i in first] == [("paid", 100, 50)]
    _event(client, "calls", cus.id, "10", end + HOUR, "next")
    preview = client.v1.invoices.create_preview({"customer": cus.id})
    assert (preview.subtotal, preview.total) == (100, 100)
