"""Coupons and tax rates applied to priced lines: what comes off, what is added, what is included.

Order, as on a Stripe invoice: line amounts (already rounded) → subtotal → discount → tax on the
discounted line amounts → total. Sources for each step are cited where it happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import NamedTuple

from meter.pricing.amounts import round_minor
from meter.pricing.model import ZERO, Coupon, TaxRate

HUNDRED = Decimal(100)


def discount_total(coupon: Coupon, currency: str, discountable_subtotal: int) -> int:
    """What a coupon takes off an invoice whose discountable lines sum to `discountable_subtotal`.

    `percent_off`: "Percent that will be taken off the subtotal of any invoices for this
    customer" and `amount_off`: "Amount (in the `currency` specified) that will be taken off the
    subtotal of any invoices for this customer" (API reference, coupon object). The percentage of
    the subtotal is rounded once, to the nearest minor unit with halves up, as line amounts are;
    a discount never exceeds the subtotal (an amount_off larger than the invoice leaves it at 0),
    and an amount_off coupon in another currency does not apply.
    """
    if discountable_subtotal <= 0:
        return 0
    if coupon.percent_off is not None:
        off = round_minor(Decimal(discountable_subtotal) * coupon.percent_off / HUNDRED)
        return min(discountable_subtotal, off)
    if coupon.currency != currency or coupon.amount_off is None:
        return 0
    return min(discountable_subtotal, coupon.amount_off)


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` over lines in proportion to `weights`, summing exactly to `total`.

    Stripe reports each line's share of an invoice discount (`line.discount_amounts`), and taxes
    are computed on the discounted line amount (`taxable_amount`); how it spreads the rounding
    remainder is not documented. We give each line the floor of its exact share and hand the
    remaining units to the largest fractional parts (earliest line first on ties), so the shares
    always add up to the invoice-level discount, which is the number Stripe documents.
    """
    weight_sum = sum(weights)
    if total == 0 or weight_sum <= 0:
        return [0] * len(weights)
    exact = [Decimal(total) * w / weight_sum for w in weights]
    shares = [int(e) for e in exact]  # non-negative, so int() is the floor
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


class TaxAmount(NamedTuple):  # a NamedTuple for speed, as invoice.Line
    """One tax rate's tax on one line, as Stripe's `line.taxes[]` reports it."""

    tax_rate_id: str
    percentage: Decimal
    inclusive: bool
    taxable_amount: int
    amount: int


def line_taxes(taxable: int, rates: Sequence[TaxRate]) -> tuple[TaxAmount, ...]:
    """The taxes of one line whose amount after discounts is `taxable`.

    Stripe computes tax per line item and rounds each line's tax to the nearest minor unit before
    summing (support.stripe.com/questions/rounding-rules-for-stripe-fees: lines of $0.43 and
    $4.84 at 15% give 0.0645 → $0.06 and 0.7265 → $0.73, $0.79 in all; half-up as for line
    amounts). An exclusive rate is "added to" the amount, an inclusive one "included in" it
    (docs: billing/taxes/tax-rates, `inclusive`): "if the price is €600 and you set an inclusive
    tax rate of 10%, the invoice total will still be €600. … An exclusive tax rate of 10% on a
    €600 price will result in an invoice total of €660" (support.stripe.com/questions/
    inclusive-and-exclusive-tax-options-in-the-tax-rate-api-and-stripe-tax). So the inclusive
    tax in €600 at 10% is 600 × 10/110 = 54.5454… → 54.55.

    With several rates on a line, every rate applies to the net amount (the taxable amount with
    the inclusive rates taken out), which reduces to the two cases above for a single rate.
    """
    if not rates:
        return ()
    inclusive_pct = sum((r.percentage for r in rates if r.inclusive), ZERO)
    net = Decimal(taxable) * HUNDRED / (HUNDRED + inclusive_pct)
    amounts = [round_minor(net * rate.percentage / HUNDRED) for rate in rates]
    # Like Stripe's `taxable_amount`, the base is the amount without the tax included in it.
    base = taxable - sum(a for a, r in zip(amounts, rates, strict=True) if r.inclusive)
    return tuple(
        TaxAmount(
            tax_rate_id=rate.id,
            percentage=rate.percentage,
            inclusive=rate.inclusive,
            taxable_amount=base,
            amount=amount,
        )
        for rate, amount in zip(rates, amounts, strict=True)
    )
