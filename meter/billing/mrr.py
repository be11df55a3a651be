"""Monthly recurring revenue of one subscription item, priced by meter/pricing. Pure.

Licensed items count at their price × quantity; metered items at their projected amount: usage so
far projected to the period end by pricing.project_usage (over the whole elapsed time, once the
period is old enough), priced as the invoice line would be. Amounts are
exact Decimal minor units; the caller rounds the per-currency total once, as the engine rounds.
"""

from __future__ import annotations

from decimal import Decimal

from meter.pricing import Interval, Period, Price, exact_amount, project_usage

# Months per interval, so every price is normalised to one month.
_MONTHS = {
    Interval.DAY: Decimal(12) / Decimal(365),
    Interval.WEEK: Decimal(12) / Decimal(52),
    Interval.MONTH: Decimal(1),
    Interval.YEAR: Decimal(12),
}


def monthly(price: Price, period_amount: Decimal) -> Decimal:
    """An amount for one of the price's billing periods, per month."""
    if price.recurring is None:
        return period_amount
    months = _MONTHS[price.recurring.interval] * price.recurring.interval_count
    return period_amount / months


def licensed(price: Price, quantity: Decimal) -> Decimal:
    """A licensed item's exact monthly amount."""
    return monthly(price, exact_amount(price, quantity))


def metered(price: Price, used: Decimal, period: Period, now: int) -> Decimal:
    """A metered item's exact monthly amount: usage so far projected to the period end at its
    average pace (whatever the meter's aggregation, as the gauge's help says; none before the
    period's minimum history), priced as the line would be."""
    # A period voided below zero bills 0 (pricing.price_items), and so projects from 0.
    projected = project_usage(price, max(used, Decimal(0)), period, now).projected_quantity
    return monthly(price, exact_amount(price, projected))
