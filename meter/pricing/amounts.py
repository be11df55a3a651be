"""The amount of one invoice line: a price and a quantity → integer minor units, as Stripe bills.

Where Stripe rounds, and how (each rule is cited where it is applied):

1. `transform_quantity` rounds the *quantity*: usage is divided by `divide_by` and the result is
   rounded up (ceiling) or down (floor) to a whole package *before* the unit amount applies
   ("Stripe's billing system divides the quantity by 5 and rounds up before calculating by the
   unit cost", docs: billing/subscriptions/quantity-transformation; "If a customer rents the car
   for 150 minutes, that customer is charged 30 USD for 3 hours", docs:
   billing/subscriptions/usage-based/transform-quantities).
2. Nothing else is rounded until the line amount: quantity × `unit_amount_decimal` (and the tier
   sums and flat amounts) are exact decimals, then the line is rounded once, to the nearest whole
   minor unit, halves up ("Rounding occurs on the line item level of your invoices … rounding
   occurs after the quantity is multiplied by the decimal amount … 0.05 * 30 = 1.5, which is then
   rounded up to 2 cents. If you have multiple line items, each will be rounded before summing up
   the total", docs: billing/subscriptions/decimal-amounts).
3. Zero-decimal currencies need nothing special here: amounts are already in the minor unit,
   which for JPY is the yen, so rounding to a whole minor unit is rounding to a whole yen.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from meter.pricing.errors import PricingError
from meter.pricing.model import ZERO, BillingScheme, Price, Round, Tier, TiersMode

ONE = Decimal(1)


def round_minor(amount: Decimal) -> int:
    """An exact amount as whole minor units: nearest, halves away from zero (rule 2 above)."""
    return int(amount.quantize(ONE, rounding=ROUND_HALF_UP))


def billable_quantity(price: Price, quantity: Decimal) -> Decimal:
    """The quantity the unit amount multiplies: packages for `transform_quantity` (rule 1)."""
    if quantity < 0:
        raise PricingError("quantity must be non-negative", param="quantity")
    transform = price.transform_quantity
    if transform is None:
        return quantity
    mode = ROUND_CEILING if transform.round is Round.UP else ROUND_FLOOR
    return (quantity / Decimal(transform.divide_by)).quantize(ONE, rounding=mode)


def tier_index(tiers: Sequence[Tier], quantity: Decimal) -> int:
    """The tier a quantity falls in; `up_to` is inclusive, so 1000 is in the `up_to=1000` tier."""
    for index, tier in enumerate(tiers):
        if tier.up_to is None or quantity <= tier.up_to:
            return index
    return len(tiers) - 1


def volume_exact(tiers: Sequence[Tier], quantity: Decimal) -> Decimal:
    """Volume tiers: every unit at the rate of the tier the *total* falls in, plus that tier's
    flat amount ("the subscription item bills at the tier corresponding to the amount of usage at
    the end of the period. The entire quantity (or usage) is multiplied by the unit cost of the
    tier", docs: subscriptions/pricing-models/tiered-pricing). Zero falls in the first tier, so
    its flat amount is billed at zero usage."""
    tier = tiers[tier_index(tiers, quantity)]
    return quantity * tier.unit_amount_decimal + tier.flat_amount_decimal


def graduated_parts(tiers: Sequence[Tier], quantity: Decimal) -> list[Decimal]:
    """Graduated tiers, one exact amount per tier reached: the units inside the tier at its rate
    plus its flat amount ("The quantity is multiplied by the amount for each tier and the totals
    for each tier are summed together", docs: subscriptions/pricing-models/tiered-pricing).

    A tier is reached once usage goes past the previous tier's `up_to`; the first tier is always
    reached, so its flat amount is a base fee billed even at zero usage (`flat_amount` is "the
    flat billing amount for an entire tier, regardless of the number of units in the tier",
    API reference `price.tiers`).
    """
    parts: list[Decimal] = []
    lower = ZERO
    for index, tier in enumerate(tiers):
        if index > 0 and quantity <= lower:
            break
        upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
        parts.append(max(upper - lower, ZERO) * tier.unit_amount_decimal + tier.flat_amount_decimal)
        if tier.up_to is None:
            break
        lower = tier.up_to
    return parts


def exact_amount(price: Price, quantity: Decimal) -> Decimal:
    """The unrounded amount for `quantity` units of `price`, in minor units."""
    billable = billable_quantity(price, quantity)
    if price.billing_scheme is BillingScheme.PER_UNIT:
        # Never None here: a per_unit Price is refused without a unit amount.
        return billable * (price.unit_amount_decimal or ZERO)
    if price.tiers_mode is TiersMode.VOLUME:
        return volume_exact(price.tiers, billable)
    return sum(graduated_parts(price.tiers, billable), ZERO)


def line_amount(price: Price, quantity: Decimal) -> int:
    """What one invoice line for `quantity` units of `price` comes to, in whole minor units."""
    return round_minor(exact_amount(price, quantity))


def flat_fees(price: Price) -> int:
    """What the price bills at zero quantity: its first tier's flat amount, if any."""
    return line_amount(price, ZERO)
