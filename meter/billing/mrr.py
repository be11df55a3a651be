"""Monthly recurring revenue of one subscription item. Pure.

Licensed items count at their price × quantity; metered items at their projected amount: usage so
far extrapolated linearly to the period end, priced. Amounts are Decimal minor units; the caller
rounds once at the end. (The pricing engine in meter/pricing owns exact invoice math; MRR is a
trend metric.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any

# Months per interval, so every price is normalised to one month.
_MONTHS = {
    "day": Decimal(12) / Decimal(365),
    "week": Decimal(12) / Decimal(52),
    "month": Decimal(1),
    "year": Decimal(12),
}


def unit(price: Mapping[str, Any]) -> Decimal:
    if price.get("unit_amount_decimal") is not None:
        return Decimal(str(price["unit_amount_decimal"]))
    return Decimal(price.get("unit_amount") or 0)


def transformed(qty: Decimal, transform: Mapping[str, Any] | None) -> Decimal:
    if not transform:
        return qty
    divided = qty / Decimal(int(transform["divide_by"]))
    rounding = ROUND_UP if transform.get("round") == "up" else ROUND_DOWN
    return divided.quantize(Decimal(1), rounding=rounding)


def _tier_top(tier: Mapping[str, Any]) -> Decimal | None:
    top = tier.get("up_to")
    return None if top in (None, "inf") else Decimal(top)


def _tier_unit(tier: Mapping[str, Any]) -> Decimal:
    if tier.get("unit_amount_decimal") is not None:
        return Decimal(str(tier["unit_amount_decimal"]))
    return Decimal(tier.get("unit_amount") or 0)


def tiered(qty: Decimal, tiers: Sequence[Mapping[str, Any]], mode: str | None) -> Decimal:
    if mode == "volume":
        for tier in tiers:
            top = _tier_top(tier)
            if top is None or qty <= top:
                return qty * _tier_unit(tier) + Decimal(tier.get("flat_amount") or 0)
        return Decimal(0)
    total, floor = Decimal(0), Decimal(0)
    for tier in tiers:
        top = _tier_top(tier)
        in_tier = (qty if top is None else min(qty, top)) - floor
        if in_tier <= 0 and floor > 0:
            break
        total += max(in_tier, Decimal(0)) * _tier_unit(tier) + Decimal(tier.get("flat_amount") or 0)
        if top is None or qty <= top:
            break
        floor = top
    return total


def amount(price: Mapping[str, Any], qty: Decimal) -> Decimal:
    """The price of `qty` units for one period."""
    if price.get("billing_scheme") == "tiered" and price.get("tiers"):
        return tiered(qty, price["tiers"], price.get("tiers_mode"))
    return transformed(qty, price.get("transform_quantity")) * unit(price)


def projected_usage(used: Decimal, start: int, end: int, now: int) -> Decimal:
    """Usage so far, extrapolated linearly to the period end (as the metric's help says)."""
    if end <= start:
        return used
    elapsed = min(max(now - start, 1), end - start)
    return used * Decimal(end - start) / Decimal(elapsed)


def monthly(price: Mapping[str, Any], period_amount: Decimal) -> Decimal:
    months = _MONTHS.get(str(price.get("recurring_interval") or "month"), Decimal(1))
    count = Decimal(int(price.get("recurring_interval_count") or 1))
    return period_amount / (months * count)


def round_minor(value: Decimal) -> int:
    return math.floor(value + Decimal("0.5"))
