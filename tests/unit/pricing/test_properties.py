"""Properties of line amounts, each checked against an independent formulation."""

from __future__ import annotations

from bisect import bisect_left
from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given
from hypothesis import strategies as st

from meter.pricing import Price, Round, line_amount

from .strategies import graduated, monotone_prices, packages, per_unit, quantities, volume


def _half_up(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


@given(monotone_prices, quantities, quantities)
def test_amount_never_falls_as_quantity_grows(price: Price, a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    assert line_amount(price, low) <= line_amount(price, high)


@given(volume, quantities, quantities)
def test_volume_is_monotone_inside_one_tier(price: Price, a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    bounds = [t.up_to for t in price.tiers[:-1]]
    if bisect_left(bounds, low) == bisect_left(bounds, high):  # same tier
        assert line_amount(price, low) <= line_amount(price, high)


@given(graduated, quantities, st.data())
def test_graduated_is_the_sum_over_tiers(
    price: Price, quantity: Decimal, data: st.DataObject
) -> None:
    # Half the time, land exactly on a tier bound or one past it, where flat fees start.
    bounds = [t.up_to for t in price.tiers if t.up_to is not None]
    if bounds and data.draw(st.booleans()):
        quantity = data.draw(st.sampled_from(bounds)) + data.draw(st.sampled_from([0, 1]))
    # Tier i spans (lower_i, up_to_i]; it holds clamp(q - lower_i, 0, width_i) units and its
    # flat amount is due once it is reached (always for the first tier).
    total = Decimal(0)
    lower = Decimal(0)
    for index, tier in enumerate(price.tiers):
        width = None if tier.up_to is None else tier.up_to - lower
        units = max(Decimal(0), quantity - lower)
        if width is not None:
            units = min(units, width)
        reached = index == 0 or quantity > lower
        total += units * tier.unit_amount_decimal + (tier.flat_amount_decimal if reached else 0)
        lower = tier.up_to if tier.up_to is not None else lower
    assert line_amount(price, quantity) == _half_up(total)


@given(volume, quantities)
def test_volume_prices_every_unit_at_the_tier_of_the_total(price: Price, q: Decimal) -> None:
    bounds = [t.up_to for t in price.tiers[:-1]]
    tier = price.tiers[bisect_left(bounds, q)]  # first tier whose up_to ≥ q (inclusive bound)
    assert line_amount(price, q) == _half_up(
        q * tier.unit_amount_decimal + tier.flat_amount_decimal
    )


@given(packages, quantities)
def test_packages_round_the_quantity_then_price_whole_packages(price: Price, q: Decimal) -> None:
    assert price.transform_quantity is not None
    size = price.transform_quantity.divide_by
    unit = price.unit_amount_decimal or Decimal(0)
    # floor(floor(q) / size) == floor(q / size) for a positive integer size; integers only here.
    n = int(q) // size
    if price.transform_quantity.round is Round.UP and n * size < q:
        n += 1
    assert line_amount(price, q) == _half_up(n * unit)


@given(st.one_of(per_unit, packages, graduated, volume))
def test_zero_quantity_bills_only_the_first_tiers_flat_fee(price: Price) -> None:
    flat = price.tiers[0].flat_amount_decimal if price.tiers else Decimal(0)
    assert line_amount(price, Decimal(0)) == _half_up(flat)


@given(per_unit, quantities)
def test_per_unit_is_within_half_a_minor_unit_of_exact(price: Price, q: Decimal) -> None:
    exact = q * (price.unit_amount_decimal or Decimal(0))
    assert abs(Decimal(line_amount(price, q)) - exact) <= Decimal("0.5")
