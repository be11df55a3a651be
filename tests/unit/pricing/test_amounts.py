"""Line amounts against the hand-computed table, plus the rules the table does not show."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meter.pricing import (
    Price,
    PricingError,
    Tier,
    TiersMode,
    exact_amount,
    flat_fees,
    line_amount,
    price_from_stripe,
    round_minor,
)
from meter.pricing.model import BillingScheme, TransformQuantity

from .cases import CASES, TYPOGRAPHIC, VOLUME_FLAT, Case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hand_computed_line_amounts(case: Case) -> None:
    assert line_amount(price_from_stripe(case.params), case.quantity) == case.expected


@pytest.mark.parametrize(
    ("exact", "rounded"),
    [("0.5", 1), ("1.5", 2), ("2.5", 3), ("2.4999", 2), ("0.49", 0), ("-0.5", -1), ("7", 7)],
)
def test_round_minor_is_half_up_not_bankers(exact: str, rounded: int) -> None:
    # 2.5 → 3 tells half-up apart from banker's rounding (which gives 2).
    assert round_minor(Decimal(exact)) == rounded


def test_line_is_rounded_once_not_per_tier() -> None:
    # Two tiers of 0.5 × 1 unit: per-tier rounding would give 1 + 1 = 2; Stripe rounds the line.
    price = Price(
        currency="usd",
        billing_scheme=BillingScheme.TIERED,
        tiers_mode=TiersMode.GRADUATED,
        tiers=(Tier(Decimal(1), Decimal("0.5")), Tier(None, Decimal("0.5"))),
    )
    assert exact_amount(price, Decimal(2)) == Decimal(1)
    assert line_amount(price, Decimal(2)) == 1


def test_volume_total_can_drop_when_a_tier_is_crossed() -> None:
    # Documented by Stripe ("the total might decrease"): 1000 × 8 + 200 = 8200, 1001 × 5 = 5005.
    price = price_from_stripe(
        {
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "volume",
            "tiers": VOLUME_FLAT,
        }
    )
    assert line_amount(price, Decimal(1000)) == 8200
    assert line_amount(price, Decimal(1001)) == 5005


def test_flat_fees_are_what_zero_usage_costs() -> None:
    graduated = price_from_stripe(
        {
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [
                {"up_to": 10, "flat_amount_decimal": "999.5"},
                {"up_to": None, "unit_amount": 1},
            ],
        }
    )
    assert flat_fees(graduated) == 1000  # 999.5 → 1000
    typographic = {"currency": "usd", "billing_scheme": "tiered", "tiers": TYPOGRAPHIC}
    assert flat_fees(price_from_stripe({**typographic, "tiers_mode": "volume"})) == 0


def test_negative_quantity_is_refused() -> None:
    price = Price(currency="usd", unit_amount_decimal=Decimal(1))
    with pytest.raises(PricingError):
        line_amount(price, Decimal(-1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"unit_amount_decimal": None},
        {"unit_amount_decimal": Decimal(-1)},
        {"currency": "USD", "unit_amount_decimal": Decimal(1)},
        {"billing_scheme": BillingScheme.TIERED, "tiers_mode": TiersMode.VOLUME},
        {
            "billing_scheme": BillingScheme.TIERED,
            "tiers_mode": TiersMode.VOLUME,
            "tiers": (Tier(Decimal(5)),),  # last tier must be inf
        },
        {
            "billing_scheme": BillingScheme.TIERED,
            "tiers_mode": TiersMode.VOLUME,
            "tiers": (Tier(Decimal(5)), Tier(Decimal(5)), Tier(None)),  # not ascending
        },
        {
            "billing_scheme": BillingScheme.TIERED,
            "tiers_mode": TiersMode.GRADUATED,
            "tiers": (Tier(None),),
            "transform_quantity": TransformQuantity(10),
        },
        {"unit_amount_decimal": Decimal(1), "transform_quantity": TransformQuantity(0)},
    ],
)
def test_prices_stripe_would_refuse_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(PricingError):
        Price(**{"currency": "usd", **kwargs})  # type: ignore[arg-type]
