"""Hypothesis strategies for Stripe-shaped prices: at most 12 decimal places, as Stripe allows."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import strategies as st

from meter.pricing import BillingScheme, Price, Round, Tier, TiersMode, TransformQuantity

amounts = st.decimals(min_value=0, max_value=100_000, places=12, allow_nan=False)
small_amounts = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False)
quantities = st.decimals(min_value=0, max_value=10_000_000, places=3, allow_nan=False)
whole_quantities = st.integers(min_value=0, max_value=10_000_000).map(Decimal)


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(draw(st.sets(st.integers(1, 1_000_000), min_size=0, max_size=5)))
    ups: list[Decimal | None] = [Decimal(b) for b in bounds]
    ups.append(None)
    return tuple(Tier(up, draw(small_amounts), draw(small_amounts)) for up in ups)


def tiered(mode: TiersMode) -> st.SearchStrategy[Price]:
    return tier_lists().map(
        lambda tiers: Price(
            currency="usd", billing_scheme=BillingScheme.TIERED, tiers_mode=mode, tiers=tiers
        )
    )


per_unit = amounts.map(lambda a: Price(currency="usd", unit_amount_decimal=a))
packages = st.builds(
    lambda a, d, r: Price(
        currency="usd", unit_amount_decimal=a, transform_quantity=TransformQuantity(d, r)
    ),
    small_amounts,
    st.integers(1, 10_000),
    st.sampled_from(Round),
)
graduated = tiered(TiersMode.GRADUATED)
volume = tiered(TiersMode.VOLUME)
# Volume is left out on purpose: its total drops when a tier is crossed (see test_amounts).
monotone_prices = st.one_of(per_unit, packages, graduated)
