"""The hand-computed cases through the Stripe emulator's invoice preview (official SDK), and the
engine's projection of the same subscription: equal to the cent."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest
import stripe

from meter.pricing import (
    Discount,
    Period,
    SubscriptionItem,
    coupon_from_stripe,
    line_amount,
    price_from_stripe,
    project_invoice,
)
from tests.unit.pricing.cases import CASES, GRADUATED_TIERS, LICENSED, METERED, Case

_names = itertools.count()


def _price(client: stripe.StripeClient, product: str, params: dict[str, Any]) -> stripe.Price:
    params = {**params, "product": product}
    if params.get("recurring", {}).get("usage_type") == "metered":
        meter = client.v1.billing.meters.create(
            {
                "display_name": "Usage",
                "event_name": f"usage_{next(_names)}",
                "default_aggregation": {"formula": "sum"},
            }
        )
        params["recurring"] = {**params["recurring"], "meter": meter.id}
    return client.v1.prices.create(params)


def _report(
    client: stripe.StripeClient, price: stripe.Price, customer: str, at: int, value: Decimal
) -> None:
    meter = client.v1.billing.meters.retrieve(str(price.recurring.meter))  # type: ignore[union-attr]
    client.v1.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "timestamp": at,
            "identifier": f"e{next(_names)}",
            "payload": {"stripe_customer_id": customer, "value": str(value)},
        }
    )


def _subscribe(
    client: stripe.StripeClient,
    lines: list[tuple[dict[str, Any], Decimal]],
    coupon: dict[str, Any] | None = None,
) -> tuple[stripe.Invoice, stripe.Subscription, list[stripe.Price], stripe.Coupon | None]:
    """Subscribe a new customer to one item per (price params, quantity) — licensed items get the
    quantity, metered ones report it as usage — and return the preview of the next invoice."""
    product = client.v1.products.create({"name": "Metered API"}).id
    customer = client.v1.customers.create({"email": "p@example.com"}).id
    prices = [_price(client, product, params) for params, _ in lines]
    items = [
        {"price": p.id}
        if p.recurring and p.recurring.usage_type == "metered"
        else {"price": p.id, "quantity": int(q)}
        for p, (_, q) in zip(prices, lines, strict=True)
    ]
    created = client.v1.coupons.create(coupon) if coupon else None
    # Stripe sends a price's tiers only when expanded.
    create: dict[str, Any] = {
        "customer": customer,
        "items": items,
        "expand": ["items.data.price.tiers"],
    }
    if created is not None:
        create["discounts"] = [{"coupon": created.id}]
    sub = client.v1.subscriptions.create(create)  # type: ignore[arg-type]
    start = sub["items"].data[0].current_period_start
    for price, (_, quantity) in zip(prices, lines, strict=True):
        if price.recurring and price.recurring.usage_type == "metered" and quantity > 0:
            _report(client, price, customer, start, quantity)
    preview = client.v1.invoices.create_preview({"customer": customer})
    return preview, sub, prices, created


def _engine(
    sub: stripe.Subscription, coupon: stripe.Coupon | None, usage: dict[str, Decimal]
) -> Any:
    """The engine's projection of the same subscription, from Stripe's own objects."""
    items = [
        SubscriptionItem(price_from_stripe(item.price.to_dict()), item.quantity, item.id)
        for item in sub["items"].data
    ]
    first = sub["items"].data[0]
    period = Period(first.current_period_start, first.current_period_end)
    length = period.end - period.start  # the emulator's months are calendar months; only the
    licensed = Period(period.end, period.end + length)  # periods' identity matters below
    discount = (
        Discount.starting(coupon_from_stripe(coupon.to_dict()), sub.start_date) if coupon else None
    )
    return project_invoice(items, usage, period=period, licensed_period=licensed, discount=discount)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_case_previews_to_the_hand_computed_amount(
    client: stripe.StripeClient, case: Case
) -> None:
    preview, sub, _, _ = _subscribe(client, [(case.params, case.quantity)])
    [line] = preview.lines.data
    assert line.amount == case.expected
    item = sub["items"].data[0]
    assert line_amount(price_from_stripe(item.price.to_dict()), case.quantity) == line.amount
    usage = {item.id: case.quantity} if case.metered else {}
    assert _engine(sub, None, usage).total == preview.total == case.expected


CALLS = {
    "currency": "usd",
    "billing_scheme": "tiered",
    "tiers_mode": "graduated",
    "tiers": GRADUATED_TIERS,
    "recurring": METERED,
}
BASE = {"currency": "usd", "unit_amount": 2000, "recurring": LICENSED}


@pytest.mark.parametrize(
    ("coupon", "discount", "total"),
    [
        # 750 (500 flat + 500 × 0.5) + 2 × 2000 = 4750 before any coupon.
        (None, 0, 4750),
        ({"percent_off": 25, "duration": "forever"}, 1188, 3562),  # 1187.5 → 1188
        ({"percent_off": 33.3333, "duration": "forever"}, 1583, 3167),  # 1583.33 → 1583
        ({"amount_off": 1000, "currency": "usd", "duration": "forever"}, 1000, 3750),
        ({"amount_off": 10000, "currency": "usd", "duration": "forever"}, 4750, 0),  # capped
        # Used up by the subscription's first invoice, so the next one is at full price.
        ({"percent_off": 50, "duration": "once"}, 0, 4750),
        # Still inside its 3 months at the end of the first month.
        ({"percent_off": 50, "duration": "repeating", "duration_in_months": 3}, 2375, 2375),
        # Ends with the first month: the invoice dated at its end gets no discount.
        ({"percent_off": 50, "duration": "repeating", "duration_in_months": 1}, 0, 4750),
    ],
)
def test_projected_invoice_with_coupons_matches_the_preview(
    client: stripe.StripeClient, coupon: dict[str, Any] | None, discount: int, total: int
) -> None:
    preview, sub, prices, created = _subscribe(
        client, [(CALLS, Decimal(1500)), (BASE, Decimal(2))], coupon
    )
    metered_item = next(i for i in sub["items"].data if i.price.id == prices[0].id)
    # A once coupon is gone from the subscription after the first invoice, as in Stripe.
    live = client.v1.subscriptions.retrieve(sub.id)
    still_attached = created if created is not None and live.discounts else None
    projection = _engine(sub, still_attached, {metered_item.id: Decimal(1500)})
    preview_discount = sum(d.amount for d in preview.total_discount_amounts or [])
    by_item = {
        line.parent.subscription_item_details.subscription_item: line.amount  # type: ignore[union-attr]
        for line in preview.lines.data
    }
    assert {line.item_id: line.amount for line in projection.lines} == by_item
    assert (projection.subtotal, projection.discount, projection.total) == (
        preview.subtotal,
        preview_discount,
        preview.total,
    )
    assert (preview_discount, preview.total) == (discount, total)


def test_zero_decimal_invoice_matches_the_preview(client: stripe.StripeClient) -> None:
    yen = {"currency": "jpy", "unit_amount": 150, "recurring": METERED}
    seat = {"currency": "jpy", "unit_amount": 980, "recurring": LICENSED}
    preview, sub, prices, created = _subscribe(
        client, [(yen, Decimal(7)), (seat, Decimal(1))], {"percent_off": 15, "duration": "forever"}
    )
    metered_item = next(i for i in sub["items"].data if i.price.id == prices[0].id)
    projection = _engine(sub, created, {metered_item.id: Decimal(7)})
    # ¥1050 + ¥980 = ¥2030; 15% = 304.5 → ¥305 off → ¥1725.
    assert preview.currency == projection.currency == "jpy"
    assert preview.total == projection.total == 1725
