"""Invoice math against hand-computed amounts (cents)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meter.stripe_emulator import pricing
from meter.stripe_emulator.pricing import PriceModel, Tier

GRADUATED = PriceModel(
    billing_scheme="tiered",
    tiers_mode="graduated",
    tiers=(
        Tier(up_to=Decimal(1000), unit_amount=Decimal(0), flat_amount=Decimal(500)),
        Tier(up_to=Decimal(10000), unit_amount=Decimal("0.5")),
        Tier(up_to=None, unit_amount=Decimal("0.25"), flat_amount=Decimal(100)),
    ),
)
VOLUME = PriceModel(
    billing_scheme="tiered",
    tiers_mode="volume",
    tiers=(
        Tier(up_to=Decimal(100), unit_amount=Decimal(10)),
        Tier(up_to=Decimal(1000), unit_amount=Decimal(8), flat_amount=Decimal(200)),
        Tier(up_to=None, unit_amount=Decimal(5)),
    ),
)


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        (0, 500),  # first tier's flat fee is a base fee
        (1000, 500),
        (1001, 501),  # 500 + 1 × 0.5 = 500.5 → half rounds up
        (10000, 5000),  # 500 + 9000 × 0.5
        (12000, 5600),  # 500 + 4500 + 2000 × 0.25 + 100
    ],
)
def test_graduated_tiers(quantity: int, expected: int) -> None:
    assert pricing.amount(GRADUATED, Decimal(quantity)) == expected


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [(0, 0), (100, 1000), (101, 1008), (1000, 8200), (1001, 5005)],
)
def test_volume_tiers_price_every_unit_at_the_reached_tier(quantity: int, expected: int) -> None:
    assert pricing.amount(VOLUME, Decimal(quantity)) == expected


def test_per_unit_with_fractional_cents_rounds_half_up_once() -> None:
    model = PriceModel(unit_amount=Decimal("0.125"))
    assert pricing.amount(model, Decimal(3)) == 0  # 0.375
    assert pricing.amount(model, Decimal(4)) == 1  # 0.5 → 1
    assert pricing.amount(model, Decimal(1000)) == 125


@pytest.mark.parametrize(
    ("quantity", "rounding", "expected"),
    [(0, "up", 0), (1, "up", 1000), (1000, "up", 1000), (1001, "up", 2000), (1999, "down", 1000)],
)
def test_package_pricing(quantity: int, rounding: str, expected: int) -> None:
    model = PriceModel(unit_amount=Decimal(1000), divide_by=1000, round=rounding)
    assert pricing.amount(model, Decimal(quantity)) == expected


def test_from_price_reads_stripe_shapes() -> None:
    price = {
        "billing_scheme": "tiered",
        "tiers_mode": "volume",
        "tiers": [
            {"up_to": 100, "unit_amount_decimal": "10", "flat_amount_decimal": None},
            {"up_to": None, "unit_amount_decimal": "5", "flat_amount_decimal": "0"},
        ],
        "transform_quantity": None,
    }
    assert pricing.amount(PriceModel.from_price(price), Decimal(200)) == 1000


def test_prorate_and_discount() -> None:
    assert pricing.prorate(3000, 15 * 86400, 30 * 86400) == 1500
    assert pricing.prorate(1000, 1, 3) == 333
    assert pricing.prorate(1000, 5, 0) == 0
    assert pricing.discount(1999, Decimal(25), None) == 500  # 499.75 → 500
    assert pricing.discount(500, None, 800) == 500
    assert pricing.discount(0, Decimal(50), None) == 0


def test_add_interval_clamps_month_ends() -> None:
    jan31 = 1738281600  # 2025-01-31T00:00:00Z
    assert pricing.add_interval(jan31, "month", 1) == 1740700800  # 2025-02-28
    assert pricing.add_interval(jan31, "day", 1) == jan31 + 86400
    assert pricing.add_interval(jan31, "year", 1) == 1769817600  # 2026-01-31
