"""Reading Stripe's wire shapes, and currencies."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meter.pricing import (
    BillingScheme,
    Duration,
    PricingError,
    Round,
    TiersMode,
    UsageType,
    coupon_from_stripe,
    currencies,
    price_from_stripe,
    tax_rate_from_stripe,
)


def test_price_from_a_stripe_price_object() -> None:
    price = price_from_stripe(
        {
            "id": "price_1",
            "currency": "eur",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [
                # Stripe answers both the integer and the decimal field; the decimal wins.
                {
                    "up_to": 1000,
                    "unit_amount": None,
                    "unit_amount_decimal": "0.0125",
                    "flat_amount": 500,
                    "flat_amount_decimal": "500",
                },
                {
                    "up_to": None,
                    "unit_amount": 1,
                    "unit_amount_decimal": "1",
                    "flat_amount": None,
                    "flat_amount_decimal": None,
                },
            ],
            "transform_quantity": None,
            "recurring": {"interval": "month", "interval_count": 3, "usage_type": "metered"},
            "unit_amount": None,
            "unit_amount_decimal": None,
        }
    )
    assert price.billing_scheme is BillingScheme.TIERED
    assert price.tiers_mode is TiersMode.GRADUATED
    assert price.tiers[0].unit_amount_decimal == Decimal("0.0125")
    assert price.tiers[0].flat_amount_decimal == 500
    assert price.tiers[1].up_to is None
    assert price.tiers[1].flat_amount_decimal == 0
    assert price.recurring is not None
    assert price.recurring.interval_count == 3
    assert price.metered
    assert price.model == "tiered_graduated"


def test_package_price_and_licensed_default() -> None:
    price = price_from_stripe(
        {
            "currency": "usd",
            "unit_amount": 1000,
            "unit_amount_decimal": "1000",
            "transform_quantity": {"divide_by": 5, "round": "down"},
            "recurring": {"interval": "month"},
        }
    )
    assert price.transform_quantity is not None
    assert price.transform_quantity.round is Round.DOWN
    assert price.recurring is not None
    assert price.recurring.usage_type is UsageType.LICENSED
    assert not price.metered
    assert price.model == "package"


def test_coupons_and_tax_rates() -> None:
    pct = coupon_from_stripe({"id": "c", "percent_off": 12.5, "duration": "forever"})
    assert pct.percent_off == Decimal("12.5")
    assert pct.duration is Duration.FOREVER
    off = coupon_from_stripe(
        {"amount_off": 300, "currency": "usd", "duration": "repeating", "duration_in_months": 3}
    )
    assert off.amount_off == 300
    rate = tax_rate_from_stripe({"id": "txr", "percentage": 8.25, "inclusive": False})
    assert rate.percentage == Decimal("8.25")
    with pytest.raises(PricingError):
        coupon_from_stripe({"percent_off": 10, "amount_off": 5, "currency": "usd"})
    with pytest.raises(PricingError):
        coupon_from_stripe({"amount_off": 5})  # no currency
    with pytest.raises(PricingError):
        coupon_from_stripe({"percent_off": 10, "duration": "repeating"})
    with pytest.raises(PricingError):
        tax_rate_from_stripe({"percentage": "nan"})


@pytest.mark.parametrize(
    ("currency", "exponent", "major"),
    [
        ("usd", 2, "19.99"),
        ("JPY", 0, "1999"),
        ("krw", 0, "1999"),
        ("kwd", 3, "1.999"),
        ("isk", 2, "19.99"),
    ],
)
def test_currency_exponents(currency: str, exponent: int, major: str) -> None:
    assert currencies.exponent(currency) == exponent
    assert currencies.to_major(1999, currency) == Decimal(major)


def test_zero_decimal_list_is_stripes() -> None:
    assert {
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    } == currencies.ZERO_DECIMAL
    assert currencies.is_zero_decimal("JPY")
    assert not currencies.is_zero_decimal("usd")
    with pytest.raises(PricingError):
        currencies.normalize("dollars")
