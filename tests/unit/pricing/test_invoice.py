"""Projected invoices, coupons and taxes against amounts worked out by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meter.pricing import (
    Coupon,
    Discount,
    Duration,
    Period,
    PricingError,
    SubscriptionItem,
    TaxRate,
    allocate,
    line_taxes,
    price_from_stripe,
    project_invoice,
)

from .cases import GRADUATED_TIERS, LICENSED, METERED

PERIOD = Period(1_700_000_000, 1_702_592_000)
NEXT = Period(1_702_592_000, 1_705_270_400)
BASE = price_from_stripe(
    {"id": "p_base", "currency": "usd", "unit_amount": 2000, "recurring": LICENSED}
)
CALLS = price_from_stripe(
    {
        "id": "p_calls",
        "currency": "usd",
        "billing_scheme": "tiered",
        "tiers_mode": "graduated",
        "tiers": GRADUATED_TIERS,
        "recurring": METERED,
    }
)
ITEMS = [SubscriptionItem(CALLS, id="si_calls"), SubscriptionItem(BASE, quantity=2, id="si_base")]
USAGE = {"si_calls": Decimal(1500)}


def _forever(**kwargs: object) -> Discount:
    return Discount(Coupon(duration=Duration.FOREVER, **kwargs))  # type: ignore[arg-type]


def test_lines_subtotal_and_periods() -> None:
    invoice = project_invoice(ITEMS, USAGE, period=PERIOD, licensed_period=NEXT)
    # metered: 500 flat + 500 × 0.5 = 750 for the period that ends; licensed: 2 × 2000 in advance.
    assert [(line.kind, line.amount) for line in invoice.lines] == [
        ("metered", 750),
        ("licensed", 4000),
    ]
    assert invoice.lines[0].period == PERIOD
    assert invoice.lines[1].period == NEXT
    assert (invoice.subtotal, invoice.discount, invoice.tax, invoice.total) == (4750, 0, 0, 4750)
    assert invoice.currency == "usd"


def test_metered_item_without_usage_bills_its_base_fee() -> None:
    invoice = project_invoice(ITEMS, {}, period=PERIOD)
    assert [line.amount for line in invoice.lines] == [500, 4000]  # first tier's flat 500


def test_percent_coupon_then_exclusive_tax() -> None:
    invoice = project_invoice(
        ITEMS,
        USAGE,
        period=PERIOD,
        discount=_forever(percent_off=Decimal(25)),
        tax_rates=[TaxRate(Decimal("8.25"), id="txr")],
    )
    # discount: 4750 × 25% = 1187.5 → 1188. Shares: 750/4750 × 1188 = 187.58, 4000/4750 × 1188 =
    # 1000.42 → floors 187 + 1000 = 1187, the spare unit to the larger remainder → 188, 1000.
    assert invoice.discount == 1188
    assert [line.discount_amount for line in invoice.lines] == [188, 1000]
    # tax: (750 - 188) × 8.25% = 46.365 → 46; (4000 - 1000) × 8.25% = 247.5 → 248; 294 in all.
    assert [line.taxes[0].amount for line in invoice.lines] == [46, 248]
    assert invoice.lines[0].taxes[0].taxable_amount == 562
    assert invoice.tax == 294
    assert invoice.total == 4750 - 1188 + 294  # 3856
    assert invoice.amount_due == 3856


def test_inclusive_tax_is_reported_but_not_added() -> None:
    invoice = project_invoice(ITEMS, USAGE, period=PERIOD, tax_rates=[TaxRate(Decimal(20), True)])
    # 750 × 20/120 = 125; 4000 × 20/120 = 666.67 → 667.
    assert [line.taxes[0].amount for line in invoice.lines] == [125, 667]
    assert [line.taxes[0].taxable_amount for line in invoice.lines] == [625, 3333]
    assert (invoice.tax, invoice.tax_included, invoice.total) == (0, 792, 4750)


def test_stripe_support_tax_rounding_example() -> None:
    # support.stripe.com rounding example: $0.43 and $4.84 at 15% → 0.0645 → 6, 0.7265 → 73.
    rate = TaxRate(Decimal(15))
    assert [t.amount for t in line_taxes(43, [rate]) + line_taxes(484, [rate])] == [6, 73]
    items = [
        SubscriptionItem(
            price_from_stripe({"currency": "usd", "unit_amount": a, "recurring": LICENSED}),
            quantity=1,
            id=f"si_{a}",
        )
        for a in (43, 484)
    ]
    invoice = project_invoice(items, {}, period=PERIOD, tax_rates=[rate])
    assert (invoice.subtotal, invoice.tax, invoice.total) == (527, 79, 606)


def test_stripe_support_inclusive_example() -> None:
    # "price is €600 … inclusive tax rate of 10%, the invoice total will still be €600"; exclusive
    # → €660. In cents: 60000 × 10/110 = 5454.54 → 5455 included; 60000 × 10% = 6000 added.
    assert line_taxes(60000, [TaxRate(Decimal(10), True)])[0].amount == 5455
    assert line_taxes(60000, [TaxRate(Decimal(10))])[0].amount == 6000


def test_item_tax_rates_replace_the_default_ones() -> None:
    items = [ITEMS[0], SubscriptionItem(BASE, 2, "si_base", (TaxRate(Decimal(0)),))]
    invoice = project_invoice(items, USAGE, period=PERIOD, tax_rates=[TaxRate(Decimal(10))])
    assert [line.taxes[0].amount for line in invoice.lines] == [75, 0]  # 750 × 10%; 0%


@pytest.mark.parametrize(
    ("coupon", "discount", "total"),
    [
        (Coupon(amount_off=1000, currency="usd", duration=Duration.FOREVER), 1000, 3750),
        (Coupon(amount_off=10_000, currency="usd", duration=Duration.FOREVER), 4750, 0),  # capped
        (Coupon(amount_off=1000, currency="eur", duration=Duration.FOREVER), 0, 4750),  # other ccy
        (Coupon(percent_off=Decimal(100), duration=Duration.FOREVER), 4750, 0),
        (Coupon(percent_off=Decimal("33.3333"), duration=Duration.FOREVER), 1583, 3167),  # 1583.33
    ],
)
def test_coupons(coupon: Coupon, discount: int, total: int) -> None:
    invoice = project_invoice(ITEMS, USAGE, period=PERIOD, discount=Discount(coupon))
    assert (invoice.discount, invoice.total) == (discount, total)
    assert sum(line.discount_amount for line in invoice.lines) == discount


def test_coupon_durations_decide_by_invoice_date() -> None:
    repeating = Coupon(percent_off=Decimal(50), duration=Duration.REPEATING, duration_in_months=1)
    discount = Discount(repeating, start=PERIOD.start, end=PERIOD.end)
    # The cycle invoice is dated at the period end, which is the repeating discount's end: gone.
    assert project_invoice(ITEMS, USAGE, period=PERIOD, discount=discount).discount == 0
    early = project_invoice(
        ITEMS, USAGE, period=PERIOD, discount=discount, invoice_date=PERIOD.end - 1
    )
    assert early.discount == 2375  # 4750 × 50%
    once = Discount(Coupon(percent_off=Decimal(50)), start=PERIOD.start)
    assert project_invoice(ITEMS, USAGE, period=PERIOD, discount=once).discount == 2375
    not_started = Discount(repeating, start=PERIOD.end + 1)
    assert project_invoice(ITEMS, USAGE, period=PERIOD, discount=not_started).discount == 0


def test_minimum_spend_tops_up_the_lines() -> None:
    invoice = project_invoice(ITEMS, USAGE, period=PERIOD, minimum=10_000)
    assert invoice.lines[-1].kind == "minimum"
    assert invoice.lines[-1].amount == 10_000 - 4750
    assert invoice.subtotal == 10_000
    assert project_invoice(ITEMS, USAGE, period=PERIOD, minimum=100).subtotal == 4750


def test_zero_decimal_invoice() -> None:
    yen = price_from_stripe({"currency": "jpy", "unit_amount": 150, "recurring": METERED})
    seat = price_from_stripe({"currency": "jpy", "unit_amount": 980, "recurring": LICENSED})
    items = [SubscriptionItem(yen, id="a"), SubscriptionItem(seat, 1, "b")]
    invoice = project_invoice(
        items, {"a": Decimal(7)}, period=PERIOD, discount=_forever(percent_off=Decimal(15))
    )
    # ¥1050 + ¥980 = ¥2030; 15% = 304.5 → ¥305 off; ¥1725.
    assert (invoice.subtotal, invoice.discount, invoice.total) == (2030, 305, 1725)


def test_one_currency_per_invoice() -> None:
    euro = price_from_stripe({"currency": "eur", "unit_amount": 1, "recurring": LICENSED})
    with pytest.raises(PricingError):
        project_invoice([*ITEMS, SubscriptionItem(euro, 1, "e")], USAGE, period=PERIOD)
    with pytest.raises(PricingError):
        project_invoice([], {}, period=PERIOD)
    assert project_invoice([], {}, period=PERIOD, currency="USD").total == 0


@given(st.integers(0, 10**9), st.lists(st.integers(0, 10**7), min_size=1, max_size=8))
def test_allocation_sums_to_the_total_and_stays_proportional(
    total: int, weights: list[int]
) -> None:
    shares = allocate(total, weights)
    if sum(weights) == 0 or total == 0:
        assert shares == [0] * len(weights)
        return
    assert sum(shares) == total
    for share, weight in zip(shares, weights, strict=True):
        assert abs(Decimal(share) - Decimal(total) * weight / sum(weights)) < 1


@given(
    st.lists(st.integers(0, 10**6), min_size=1, max_size=5),
    st.decimals(min_value="0.01", max_value=100, places=2),
    st.decimals(min_value=0, max_value=30, places=4),
    st.booleans(),
)
def test_invoice_identities(
    amounts: list[int], percent: Decimal, rate: Decimal, inclusive: bool
) -> None:
    items = [
        SubscriptionItem(
            price_from_stripe({"currency": "usd", "unit_amount": a, "recurring": LICENSED}),
            1,
            str(i),
        )
        for i, a in enumerate(amounts)
    ]
    invoice = project_invoice(
        items,
        {},
        period=PERIOD,
        discount=_forever(percent_off=percent),
        tax_rates=[TaxRate(rate, inclusive)],
    )
    assert invoice.subtotal == sum(amounts)
    assert 0 <= invoice.discount <= invoice.subtotal
    assert invoice.total == invoice.subtotal - invoice.discount + invoice.tax
    assert (invoice.tax == 0) if inclusive else (invoice.tax_included == 0)


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        (1738281600, 1, 1740700800),  # 2025-01-31 → 2025-02-28 (clamped)
        (1704067200, 12, 1735689600),  # 2024-01-01 → 2025-01-01
        (1706659200, 1, 1709164800),  # 2024-01-31 → 2024-02-29 (leap year)
    ],
)
def test_repeating_discount_ends_whole_months_later(start: int, months: int, end: int) -> None:
    coupon = Coupon(percent_off=Decimal(10), duration=Duration.REPEATING, duration_in_months=months)
    assert Discount.starting(coupon, start).end == end
    assert Discount.starting(Coupon(percent_off=Decimal(10)), start).end is None


def test_a_period_voided_below_zero_bills_zero_usage() -> None:
    # Stripe: "If the overall cycle usage is negative, Stripe reports the invoice line item usage
    # quantity as 0" (usage-based meters, "Fix incorrect usage data").
    invoice = project_invoice(ITEMS, {"si_calls": Decimal(-3)}, period=PERIOD, licensed_period=NEXT)
    metered = invoice.lines[0]
    assert (metered.kind, metered.quantity, metered.amount) == ("metered", Decimal(0), 500)


def test_a_once_discount_is_used_up_by_an_invoice_billed_from_its_start() -> None:
    once = Discount(Coupon(percent_off=Decimal(10), duration=Duration.ONCE), start=1000)
    assert not once.used_up(None)  # no invoice with a positive subtotal yet
    assert not once.used_up(999)  # the last one was billed before the coupon was applied
    assert once.used_up(1000)
    assert once.used_up(5000)
    forever = Discount(Coupon(percent_off=Decimal(10), duration=Duration.FOREVER), start=1000)
    assert not forever.used_up(5000)
