"""Pure invoice math, as Stripe does it: per-unit, graduated and volume tiers, packages.

Amounts are in the currency's minor unit (cents). Everything is `Decimal` until the line amount is
rounded once, to the nearest integer with halves rounded up, as Stripe rounds fractional-cent
line amounts. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any


@dataclass(frozen=True)
class Tier:
    """One tier; `up_to=None` is Stripe's `inf`."""

    up_to: Decimal | None
    unit_amount: Decimal = Decimal(0)
    flat_amount: Decimal = Decimal(0)


@dataclass(frozen=True)
class PriceModel:
    billing_scheme: str = "per_unit"
    unit_amount: Decimal = Decimal(0)
    tiers_mode: str | None = None
    tiers: Sequence[Tier] = field(default_factory=tuple)
    divide_by: int | None = None
    round: str = "up"

    @classmethod
    def from_price(cls, price: Mapping[str, Any]) -> PriceModel:
        """Read the model from a price object in Stripe's wire shape."""
        tiers = tuple(
            Tier(
                up_to=None if t.get("up_to") is None else Decimal(str(t["up_to"])),
                unit_amount=_dec(t.get("unit_amount_decimal")),
                flat_amount=_dec(t.get("flat_amount_decimal")),
            )
            for t in price.get("tiers") or ()
        )
        transform = price.get("transform_quantity") or {}
        return cls(
            billing_scheme=price.get("billing_scheme") or "per_unit",
            unit_amount=_dec(price.get("unit_amount_decimal")),
            tiers_mode=price.get("tiers_mode"),
            tiers=tiers,
            divide_by=transform.get("divide_by"),
            round=transform.get("round", "up"),
        )


def _dec(raw: object) -> Decimal:
    return Decimal(0) if raw is None else Decimal(str(raw))


def round_amount(amount: Decimal) -> int:
    """Fractional cents become whole ones, halves up (away from zero)."""
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def transform(quantity: Decimal, divide_by: int | None, rounding: str) -> Decimal:
    """`transform_quantity`: bill per package of `divide_by` units, rounding up or down."""
    if not divide_by:
        return quantity
    mode = ROUND_CEILING if rounding == "up" else ROUND_FLOOR
    return (quantity / Decimal(divide_by)).quantize(Decimal(1), rounding=mode)


def exact_amount(model: PriceModel, quantity: Decimal) -> Decimal:
    """The unrounded amount for `quantity` units."""
    if model.billing_scheme != "tiered":
        return transform(quantity, model.divide_by, model.round) * model.unit_amount
    if not model.tiers:
        return Decimal(0)
    if model.tiers_mode == "volume":
        return _volume(model.tiers, quantity)
    return _graduated(model.tiers, quantity)


def amount(model: PriceModel, quantity: Decimal) -> int:
    """The line amount in minor units for `quantity` units of a price."""
    return round_amount(exact_amount(model, quantity))


def _volume(tiers: Sequence[Tier], quantity: Decimal) -> Decimal:
    # Every unit is priced at the tier the total falls in; zero falls in the first tier.
    for tier in tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            return quantity * tier.unit_amount + tier.flat_amount
    last = tiers[-1]
    return quantity * last.unit_amount + last.flat_amount


def _graduated(tiers: Sequence[Tier], quantity: Decimal) -> Decimal:
    # Each tier prices the units inside it; a tier's flat fee applies once usage reaches it, and
    # the first tier's flat fee applies even at zero (Stripe's "base fee" pattern).
    total = Decimal(0)
    lower = Decimal(0)
    for index, tier in enumerate(tiers):
        upper = tier.up_to
        if quantity <= lower and index > 0:
            break
        in_tier = quantity - lower if upper is None else min(quantity, upper) - lower
        total += max(in_tier, Decimal(0)) * tier.unit_amount + tier.flat_amount
        if upper is None:
            break
        lower = upper
    return total


def prorate(full_amount: int, remaining: int, period: int) -> int:
    """The share of `full_amount` for `remaining` seconds of a `period`-second cycle."""
    if period <= 0:
        return 0
    return round_amount(Decimal(full_amount) * Decimal(remaining) / Decimal(period))


def discount(subtotal: int, percent_off: Decimal | None, amount_off: int | None) -> int:
    """What a coupon takes off a subtotal; never more than the subtotal."""
    if subtotal <= 0:
        return 0
    if percent_off is not None:
        return min(subtotal, round_amount(Decimal(subtotal) * percent_off / Decimal(100)))
    if amount_off is not None:
        return min(subtotal, amount_off)
    return 0


def add_interval(start: int, interval: str, count: int) -> int:
    """The end of a billing period starting at `start` (UTC), month ends clamped like Stripe."""
    dt = datetime.fromtimestamp(start, UTC)
    if interval == "day":
        return int((dt + timedelta(days=count)).timestamp())
    if interval == "week":
        return int((dt + timedelta(weeks=count)).timestamp())
    months = count * (12 if interval == "year" else 1)
    month_index = dt.month - 1 + months
    year, month = dt.year + month_index // 12, month_index % 12 + 1
    day = min(dt.day, _days_in_month(year, month))
    return int(dt.replace(year=year, month=month, day=day).timestamp())


def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    return (date(year, month + 1, 1) - date(year, month, 1)).days
