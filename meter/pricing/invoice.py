"""The projected invoice of one subscription: priced lines, subtotal, discount, tax, total.

It mirrors Stripe's upcoming invoice at the end of the current period: usage-based (metered)
items are billed in arrears for the period that ends, licensed items in advance for the period
that starts (docs: billing/subscriptions/usage-based — "metered billing … collect payment in
arrears"; licensed prices are charged at the start of each period). Callers pick the periods, so
the same function prices the invoice of a past period too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import NamedTuple

from meter.pricing import currencies
from meter.pricing.adjustments import TaxAmount, allocate, discount_total, line_taxes
from meter.pricing.amounts import line_amount
from meter.pricing.errors import PricingError
from meter.pricing.model import ZERO, Discount, Period, SubscriptionItem, TaxRate


# Invoice results are NamedTuples, not frozen dataclasses: immutable either way, but a usage
# response builds a dozen of them, and a frozen dataclass's __init__ (one object.__setattr__
# per field) is several times slower (docs/performance.md).
class Line(NamedTuple):
    """One invoice line. `kind` is "metered", "licensed", "minimum" or "pending" (a pending
    invoice item)."""

    kind: str
    item_id: str
    price_id: str
    pricing_model: str
    quantity: Decimal
    amount: int
    period: Period
    discountable: bool = True
    discount_amount: int = 0
    taxes: tuple[TaxAmount, ...] = ()


class InvoiceProjection(NamedTuple):
    """Totals as Stripe's invoice has them: `total = subtotal - discount + tax` (exclusive tax
    only; inclusive tax is already inside the line amounts and is reported as `tax_included`)."""

    currency: str
    period: Period
    lines: tuple[Line, ...]
    subtotal: int
    discount: int
    tax: int
    tax_included: int
    total: int

    @property
    def amount_due(self) -> int:
        """Stripe never asks for a negative amount; a negative total becomes customer credit."""
        return max(self.total, 0)


def price_items(
    items: Sequence[SubscriptionItem],
    usage: Mapping[str, Decimal],
    *,
    period: Period,
    licensed_period: Period | None = None,
    usage_charged: bool = True,
    renews: bool = True,
) -> list[Line]:
    """One line per item: metered items on `usage[item.id]` over `period` (no usage = 0), then
    licensed items on their quantity over `licensed_period` (default: `period`).

    `usage_charged=False` (a trial period, see lifecycle.py): metered lines keep their quantity
    at amount 0. `renews=False` (the subscription ends with `period`): no licensed lines, as
    nothing is billed in advance for a period that will not come."""
    metered: list[Line] = []
    licensed: list[Line] = []
    for item in items:
        price = item.price
        if price.metered:
            # Voids can take a period below zero: "If the overall cycle usage is negative, Stripe
            # reports the invoice line item usage quantity as 0" (docs.stripe.com/billing/
            # subscriptions/usage-based/meters/configure, "Fix incorrect usage data").
            quantity = max(usage.get(item.id, ZERO), ZERO)
            line = Line(
                "metered",
                item.id,
                price.id,
                price.model,
                quantity,
                line_amount(price, quantity) if usage_charged else 0,
                period,
            )
            metered.append(line)
        elif renews:
            quantity = Decimal(1 if item.quantity is None else item.quantity)
            line = Line(
                "licensed",
                item.id,
                price.id,
                price.model,
                quantity,
                line_amount(price, quantity),
                licensed_period or period,
            )
            licensed.append(line)
    return metered + licensed


def project_invoice(
    items: Sequence[SubscriptionItem],
    usage: Mapping[str, Decimal],
    *,
    period: Period,
    licensed_period: Period | None = None,
    currency: str | None = None,
    discount: Discount | None = None,
    invoice_date: int | None = None,
    tax_rates: Sequence[TaxRate] = (),
    minimum: int | None = None,
    usage_charged: bool = True,
    renews: bool = True,
    pending: Sequence[Line] = (),
) -> InvoiceProjection:
    """The invoice a subscription's `items` will produce for `usage` (item id → quantity).

    `invoice_date` (default: the end of `period`, when Stripe creates the cycle invoice) decides
    whether `discount` still applies. `tax_rates` are the subscription's default rates; an item's
    own `tax_rates` replace them for its line, as Stripe's item-level rates do. `minimum` is a
    minimum spend in minor units: when the lines sum to less, a "minimum" line tops them up.
    Stripe prices have no minimum of their own, so this line stands for the invoice item the
    billing module would add; it is not part of what the emulator computes. `usage_charged` and
    `renews` are as in `price_items`. `pending` are lines of fixed amount the invoice takes as
    they are (the subscription's pending invoice items).
    """
    code = _currency(items, currency)
    lines = price_items(
        items,
        usage,
        period=period,
        licensed_period=licensed_period,
        usage_charged=usage_charged,
        renews=renews,
    )
    lines += pending
    if minimum is not None and (short := minimum - sum(line.amount for line in lines)) > 0:
        lines.append(
            Line("minimum", "", "", "minimum", Decimal(1), short, licensed_period or period)
        )
    subtotal = sum(line.amount for line in lines)

    # Discounts apply to discountable, non-negative lines (`discountable` "Defaults to false for
    # prorations or negative line items", API reference, invoice line items).
    when = period.end if invoice_date is None else invoice_date
    eligible = [line.discountable and line.amount > 0 for line in lines]
    base = sum(line.amount for line, ok in zip(lines, eligible, strict=True) if ok)
    off = 0
    if discount is not None and discount.applies_at(when):
        off = discount_total(discount.coupon, code, base)
    shares = allocate(
        off, [line.amount if ok else 0 for line, ok in zip(lines, eligible, strict=True)]
    )

    rates_by_item = {item.id: item.tax_rates for item in items if item.tax_rates}
    defaults = tuple(tax_rates)
    taxed = [
        _settled(line, share, rates_by_item.get(line.item_id, defaults))
        for line, share in zip(lines, shares, strict=True)
    ]
    tax = sum(t.amount for line in taxed for t in line.taxes if not t.inclusive)
    included = sum(t.amount for line in taxed for t in line.taxes if t.inclusive)
    return InvoiceProjection(
        currency=code,
        period=period,
        lines=tuple(taxed),
        subtotal=subtotal,
        discount=off,
        tax=tax,
        tax_included=included,
        total=subtotal - off + tax,
    )


def _settled(line: Line, discount: int, rates: Sequence[TaxRate]) -> Line:
    """`line` with its share of the discount and the taxes on what remains."""
    if not discount and not rates:
        return line
    return line._replace(discount_amount=discount, taxes=line_taxes(line.amount - discount, rates))


def _currency(items: Sequence[SubscriptionItem], currency: str | None) -> str:
    # Stripe refuses subscriptions whose prices differ in currency; so do we.
    found = {item.price.currency for item in items}
    if currency:
        found.add(currencies.normalize(currency))
    if len(found) != 1:
        raise PricingError(f"one currency per invoice, got {sorted(found) or 'none'}")
    return found.pop()
