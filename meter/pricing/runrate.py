"""Projecting usage to the end of a period from what has been used so far.

A projection is an estimate, never an amount Stripe computes, so it always carries the name of
its method (and the window its rate was measured over):

- `insufficient_history`: less than `min_history(period)` has elapsed (an hour, or 0.5 % of the
  period if longer). A rate measured over minutes would be multiplied by tens of thousands (15
  units in a 40-second-old month would project a million), so the projection is the usage so far.
- `trailing_run_rate`: the usage so far plus the rate of the trailing window (the last 23–24
  hours, whole hourly buckets up to now, or the whole elapsed time if shorter) times the time
  left: it follows a changing pace, where scaling the whole period's average would lag it.
- `period_ended`: nothing is left of the period; the projection is the usage so far.
- `hold_last_value`: a `last` meter (a gauge such as seats or storage) has no rate; it holds its
  latest value.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from meter.pricing.amounts import line_amount
from meter.pricing.errors import PricingError
from meter.pricing.model import Period, Price

INSUFFICIENT_HISTORY = "insufficient_history"
TRAILING = "trailing_run_rate"
PERIOD_ENDED = "period_ended"
HOLD_LAST = "hold_last_value"

HOUR = 3600
MIN_HISTORY_SECONDS = HOUR
MIN_HISTORY_FRACTION = Decimal("0.005")  # 3.6 h of a 30-day month
# The trailing window's start is whole hours back so that hourly buckets cover it exactly.
TRAILING_HOURS = 24


class RunRate(NamedTuple):  # a NamedTuple for speed, as invoice.Line
    method: str
    elapsed_fraction: Decimal
    quantity_so_far: Decimal
    amount_so_far: int
    projected_quantity: Decimal
    projected_amount: int
    # The window the rate was measured over (trailing_run_rate only).
    window: Period | None = None


def elapsed_fraction(period: Period, now: int) -> Decimal:
    """How much of `period` lies before `now`, clamped to [0, 1]."""
    length = period.end - period.start
    if length <= 0:
        return Decimal(1)
    done = min(max(now - period.start, 0), length)
    return Decimal(done) / Decimal(length)


def min_history(period: Period) -> int:
    """Seconds of a period that must have elapsed before its usage is extrapolated."""
    length = period.end - period.start
    return max(MIN_HISTORY_SECONDS, int(MIN_HISTORY_FRACTION * length))


def trailing_start(now: int) -> int:
    """The start of the trailing window at `now` (unix seconds): the start of the hour holding
    `now`, minus 23 hours. A caller reads the usage at or after it (`recent` below): from
    the hourly buckets starting there, plus events not in a bucket yet."""
    return now - now % HOUR - (TRAILING_HOURS - 1) * HOUR


def trailing_window(period: Period, now: int) -> Period:
    """The window whose usage sets the rate: from `trailing_start(now)` or the period's start,
    whichever is later, to `now` (within the period)."""
    end = min(max(now, period.start), period.end)
    return Period(min(max(trailing_start(now), period.start), end), end)


def project_usage(
    price: Price,
    quantity_so_far: Decimal,
    period: Period,
    now: int,
    *,
    formula: str = "sum",
    recent: Decimal | None = None,
) -> RunRate:
    """Usage at period end if it keeps the pace of the trailing window: `quantity_so_far +
    rate × time left`, rate = `recent` / the window's length.

    `recent` is the usage of `trailing_window(period, now)`; without it (a caller that has only
    the total) the window is the whole elapsed time, rate = `quantity_so_far` / elapsed, which
    is the linear run rate. The amount is priced exactly like the final line, so tiers and
    packages apply to the projected total, not to a scaled amount.
    """
    if quantity_so_far < 0:
        raise PricingError("usage must be non-negative", param="quantity")
    if recent is not None and recent < 0:
        raise PricingError("recent usage must be non-negative", param="recent")
    fraction = elapsed_fraction(period, now)
    window = None
    if formula == "last":
        method, projected = HOLD_LAST, quantity_so_far
    elif formula not in ("sum", "count"):
        raise PricingError(f"unknown meter formula {formula!r}", param="formula")
    elif now >= period.end:
        method, projected = PERIOD_ENDED, quantity_so_far
    elif now - period.start < min_history(period):
        method, projected = INSUFFICIENT_HISTORY, quantity_so_far
    else:
        method = TRAILING
        if recent is None:
            window, recent = Period(period.start, now), quantity_so_far
        else:
            window = trailing_window(period, now)
        length = window.end - window.start  # > 0: at least min_history of it has elapsed
        # Multiplied before divided: a steady rate projects its exact total.
        projected = quantity_so_far + recent * Decimal(period.end - now) / Decimal(length)
    return RunRate(
        method=method,
        elapsed_fraction=fraction,
        quantity_so_far=quantity_so_far,
        amount_so_far=line_amount(price, quantity_so_far),
        projected_quantity=projected,
        projected_amount=line_amount(price, projected),
        window=window,
    )
