"""Projecting usage to the end of a period from what has been used so far.

A projection is an estimate, never an amount Stripe computes, so it always carries the name of
its method. Only one is offered: a linear run rate (the usage so far, scaled by how much of the
period has elapsed). For a `last` meter (a gauge such as seats or storage) a rate makes no sense,
so the projection holds the latest value instead and says so.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from meter.pricing.amounts import line_amount
from meter.pricing.errors import PricingError
from meter.pricing.model import Period, Price

LINEAR = "linear_run_rate"
HOLD_LAST = "hold_last_value"


class RunRate(NamedTuple):  # a NamedTuple for speed, as invoice.Line
    method: str
    elapsed_fraction: Decimal
    quantity_so_far: Decimal
    amount_so_far: int
    projected_quantity: Decimal
    projected_amount: int


def elapsed_fraction(period: Period, now: int) -> Decimal:
    """How much of `period` lies before `now`, clamped to [0, 1]."""
    length = period.end - period.start
    if length <= 0:
        return Decimal(1)
    done = min(max(now - period.start, 0), length)
    return Decimal(done) / Decimal(length)


def project_usage(
    price: Price, quantity_so_far: Decimal, period: Period, now: int, *, formula: str = "sum"
) -> RunRate:
    """Usage at period end if it keeps its pace: `quantity_so_far / elapsed fraction`.

    Before any time has elapsed there is no pace to extrapolate, so the projection is the usage
    so far (zero-length elapsed time would divide by zero). The amount is priced exactly like the
    final line, so tiers and packages apply to the projected total, not to a scaled amount.
    """
    if quantity_so_far < 0:
        raise PricingError("usage must be non-negative", param="quantity")
    fraction = elapsed_fraction(period, now)
    if formula == "last":
        method, projected = HOLD_LAST, quantity_so_far
    elif formula in ("sum", "count"):
        method = LINEAR
        projected = quantity_so_far if fraction == 0 else quantity_so_far / fraction
    else:
        raise PricingError(f"unknown meter formula {formula!r}", param="formula")
    return RunRate(
        method=method,
        elapsed_fraction=fraction,
        quantity_so_far=quantity_so_far,
        amount_so_far=line_amount(price, quantity_so_far),
        projected_quantity=projected,
        projected_amount=line_amount(price, projected),
    )
