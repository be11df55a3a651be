"""Run-rate projection: linear for sum/count meters, held for `last` meters."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meter.pricing import (
    HOLD_LAST,
    LINEAR,
    Period,
    PricingError,
    elapsed_fraction,
    price_from_stripe,
    project_usage,
)

from .cases import GRADUATED_TIERS, METERED

PERIOD = Period(0, 1000)
HALF_CENT = price_from_stripe(
    {"currency": "usd", "unit_amount_decimal": "0.5", "recurring": METERED}
)


def test_linear_run_rate() -> None:
    rate = project_usage(HALF_CENT, Decimal(100), PERIOD, now=250)
    # 100 units in a quarter of the period → 100 / 0.25 = 400 units → 400 × 0.5 = 200 cents.
    assert rate.method == LINEAR
    assert rate.elapsed_fraction == Decimal("0.25")
    assert (rate.amount_so_far, rate.projected_quantity, rate.projected_amount) == (50, 400, 200)


def test_projection_prices_the_projected_total_through_the_tiers() -> None:
    tiered = price_from_stripe(
        {
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": GRADUATED_TIERS,
            "recurring": METERED,
        }
    )
    rate = project_usage(tiered, Decimal(300), PERIOD, now=250)
    # 300 / 0.25 = 1200 units: 500 flat + 200 × 0.5 = 600 (not 4 × the 500 billed so far).
    assert (rate.amount_so_far, rate.projected_quantity, rate.projected_amount) == (500, 1200, 600)


@pytest.mark.parametrize(("now", "fraction"), [(-5, 0), (0, 0), (500, "0.5"), (1000, 1), (2000, 1)])
def test_elapsed_fraction_is_clamped(now: int, fraction: int | str) -> None:
    assert elapsed_fraction(PERIOD, now) == Decimal(fraction)


def test_no_elapsed_time_projects_usage_so_far() -> None:
    assert project_usage(HALF_CENT, Decimal(10), PERIOD, now=0).projected_quantity == 10
    assert project_usage(HALF_CENT, Decimal(10), Period(5, 5), now=5).projected_quantity == 10


def test_last_meters_hold_their_value() -> None:
    rate = project_usage(HALF_CENT, Decimal(40), PERIOD, now=100, formula="last")
    assert rate.method == HOLD_LAST
    assert rate.projected_quantity == 40


def test_bad_inputs() -> None:
    with pytest.raises(PricingError):
        project_usage(HALF_CENT, Decimal(1), PERIOD, now=1, formula="max")
    with pytest.raises(PricingError):
        project_usage(HALF_CENT, Decimal(-1), PERIOD, now=1)
    with pytest.raises(PricingError):
        Period(10, 5)
