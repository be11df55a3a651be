"""The billing simulation's reference model: what Stripe must invoice, worked out on its own.

Written from Stripe's documentation and meter's documented contract, never from meter's code (it
imports nothing of `meter.pricing`, `aggregator` or `reporter`). Pure: no I/O.

- Aggregation per billing period: `sum` adds values, `count` counts events (a local `count`
  definition reported to a Stripe `sum` meter), `max` takes the largest value and `last` the value
  with the latest timestamp (both reported to Stripe `last` meters), `unique_count` the number of
  distinct values of one property in the period (also a Stripe `last` meter). A Stripe sum whose
  cycle total is negative is invoiced as 0 ("If the overall cycle usage is negative, Stripe
  reports the invoice line item usage quantity as 0", docs: usage-based meters).
- Which invoice usage lands in (meter's contract, README "Reporting to Stripe"): usage reported
  before its period's invoice is finalized is billed in its own period; delta usage (sum, count)
  reported later is carried into the period open at that moment; an absolute value (max, last,
  unique_count) reported later is recorded as `late` and billed nowhere.
- Trials: "during the trial period, any usage accrued doesn't count toward the total charged"
  (Stripe docs, billing/subscriptions/trials): a trial period's lines are charged 0 (the quantity
  is the meter's); its usage reported after its invoice is finalized is billed nowhere (meter's
  contract, docs/billing.md: never carried into a paid period).
- Billing-cycle anchor reset (`billing_cycle_anchor: {type: now}`): "the current period ends now
  and a full one starts" (Stripe docs, billing/subscriptions/billing-cycle); the model keeps each
  scenario's own period boundaries (run.py) and bills usage by them.
- A price replaced mid-period on the same meter (Stripe docs, usage-based/manage-billing-setup,
  "Update prices mid-cycle"): "With billing_mode=flexible subscriptions, we create an invoice
  item that bills for previously reported metered usage when you remove a metered price" (at
  the old price, on the next invoice: the period's); in classic mode "Usage from January 1 to
  January 16 isn't billed". The new price bills the usage of its own window.
- A price replaced by one on another meter, an item added or removed mid-period (the same page,
  and the API reference: a meter event names a customer and a meter, never an item): a metered
  price bills its meter's usage from the moment it is set on its item; the price taken off bills
  as above (an invoice item in flexible mode, nothing in classic); usage of a meter no item bills
  at its timestamp is billed nowhere.
- Several items on one meter: "Meters attach to prices and form the basis of the bill" (API
  reference, billing meter): each item with a price on the meter bills the customer's usage of
  it, so a meter's usage is on every such line.
- A licensed (per-seat) item is billed in advance: each cycle invoice bills the next period at
  the quantity the item has then. A quantity changed mid-period with `create_prorations` adds
  two invoice items to the next invoice: "Unused time on" the old quantity (a credit) and
  "Remaining time on" the new one (Stripe docs, billing/subscriptions/prorations), each the full
  period's amount times the share of the period left, "down to the second based on the starting
  timestamp of the billing period and the timestamp of the proration's triggering event" (Stripe
  docs, billing/scripts/prorations; `proration_date` sets that timestamp), rounded half up on its
  own; `none` adds nothing.
- Pricing per dimension (meter's contract, docs/dimensions.md "Pricing per dimension"): a sum or
  count meter broken down by a key may have some of its values mapped to Stripe meters (and
  prices) of their own; usage of a mapped value is billed by the mapped price's line, the rest
  (other values, events without the key, usage folded into `_other` by the cardinality guard)
  by the meter's own price. Where it is billed (which period) does not change.
- Pricing (Stripe: products-prices/pricing-models): per unit; graduated tiers (each tier prices
  the units inside it, a tier's flat fee once usage enters it); volume tiers (every unit at the
  tier the total falls in, `up_to` inclusive); packages (`transform_quantity`, rounded up or
  down). One rounding per line, halves up.
- Invoice: subtotal of the metered lines; a coupon takes `percent_off` of the subtotal (rounded
  half up) or `amount_off`, never more than the subtotal; a `once` coupon is used by the first
  invoice with a positive subtotal. One tax rate per subscription, per line on the line's amount
  after its share of the discount (shares proportional to the positive lines, floors first, the
  remaining cents to the largest fractions), rounded half up; exclusive rates add
  `taxable × p/100`, inclusive ones are inside it: `taxable × p/(100+p)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Literal

Aggregation = Literal["sum", "count", "max", "last", "unique_count"]
DELTA: frozenset[str] = frozenset({"sum", "count"})
ZERO = Decimal(0)


def half_up(amount: Decimal) -> int:
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --------------------------------------------------------------------------- prices


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # None: infinity
    unit: Decimal  # cents per unit (decimal)
    flat: int = 0  # cents


@dataclass(frozen=True)
class Price:
    """A metered price: `kind` is per_unit, graduated, volume or package."""

    kind: str
    unit: Decimal = ZERO  # per_unit: cents per unit; package: cents per package
    tiers: tuple[Tier, ...] = ()
    package_size: int = 1
    package_round: str = "up"

    def amount(self, quantity: Decimal) -> int:
        q = max(quantity, ZERO)
        if self.kind == "per_unit":
            return half_up(q * self.unit)
        if self.kind == "package":
            mode = ROUND_CEILING if self.package_round == "up" else ROUND_FLOOR
            packages = (q / self.package_size).quantize(Decimal(1), rounding=mode)
            return half_up(packages * self.unit)
        if self.kind == "volume":
            for tier in self.tiers:
                if tier.up_to is None or q <= tier.up_to:
                    return half_up(q * tier.unit + tier.flat)
            raise ValueError("a volume price needs an infinite last tier")
        if self.kind == "graduated":
            total, lower = ZERO, ZERO
            for tier in self.tiers:
                if q <= lower and lower > 0:
                    break
                top = q if tier.up_to is None else min(q, tier.up_to)
                total += max(top - lower, ZERO) * tier.unit + tier.flat
                if tier.up_to is None:
                    break
                lower = tier.up_to
            return half_up(total)
        raise ValueError(f"unknown price kind {self.kind!r}")


@dataclass(frozen=True)
class Coupon:
    duration: str  # forever | once | repeating
    percent_off: Decimal | None = None
    amount_off: int | None = None

    def off(self, subtotal: int) -> int:
        if subtotal <= 0:
            return 0
        if self.percent_off is not None:
            return min(subtotal, half_up(Decimal(subtotal) * self.percent_off / 100))
        return min(subtotal, self.amount_off or 0)


@dataclass(frozen=True)
class Tax:
    percentage: Decimal
    inclusive: bool

    def on(self, taxable: int) -> int:
        rate = (
            self.percentage / (100 + self.percentage) if self.inclusive else self.percentage / 100
        )
        return half_up(Decimal(taxable) * rate)


# --------------------------------------------------------------------------- usage


NONE = "none"  # the dimension value of an event that lacks the key (docs/dimensions.md)
OTHER = "_other"  # usage folded by the cardinality guard


@dataclass(frozen=True)
class Usage:
    """One accepted event as billed: its value, timestamp (seconds), distinct-count key and the
    value of its meter's dimension key (`none`: the event lacks it)."""

    event_id: str
    value: Decimal
    timestamp: float
    key: str = ""
    dimension: str = NONE


def quantity(aggregation: str, usage: Sequence[Usage]) -> Decimal:
    """What Stripe invoices for one item and period, from the usage billed there."""
    if not usage:
        return ZERO
    if aggregation == "sum":
        return max(sum((u.value for u in usage), ZERO), ZERO)
    if aggregation == "count":
        return max(sum((u.value for u in usage), ZERO), ZERO)  # +1 per event, -1 per void
    if aggregation == "max":
        return max(u.value for u in usage)
    if aggregation == "last":
        return max(usage, key=lambda u: u.timestamp).value
    if aggregation == "unique_count":
        return Decimal(len({u.key for u in usage}))
    raise ValueError(f"unknown aggregation {aggregation!r}")


def billed_in(
    aggregation: str,
    own_period: int,
    own_finalized: bool,
    open_period: int,
    *,
    own_trial: bool = False,
) -> int | None:
    """The period whose invoice bills usage of `own_period` reported now (None: none does).
    A trial period's usage reported after its invoice is billed nowhere (never charged)."""
    if not own_finalized:
        return own_period
    if own_trial:
        return None
    return open_period if aggregation in DELTA else None


# --------------------------------------------------------------------------- invoices


@dataclass(frozen=True)
class Line:
    meter: str
    quantity: Decimal
    amount: int
    fixed: bool = False  # an invoice item (its amount fixed when it was made)


@dataclass(frozen=True)
class Invoice:
    lines: tuple[Line, ...]
    subtotal: int
    discount: int
    tax: int  # exclusive
    tax_included: int
    total: int


def discount_shares(amounts: Sequence[int], off: int) -> list[int]:
    weights = [a if a > 0 else 0 for a in amounts]
    base = sum(weights)
    if not off or base <= 0:
        return [0] * len(amounts)
    exact = [Decimal(off) * w / base for w in weights]
    shares = [int(e) for e in exact]
    order = sorted(range(len(amounts)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: off - sum(shares)]:
        shares[i] += 1
    return shares


def invoice(lines: Sequence[Line], coupon: Coupon | None, tax: Tax | None) -> Invoice:
    subtotal = sum(line.amount for line in lines)
    off = coupon.off(subtotal) if coupon is not None else 0
    shares = discount_shares([line.amount for line in lines], off)
    taxes = [
        tax.on(line.amount - share) if tax is not None else 0
        for line, share in zip(lines, shares, strict=True)
    ]
    exclusive = sum(taxes) if tax is not None and not tax.inclusive else 0
    inclusive = sum(taxes) if tax is not None and tax.inclusive else 0
    return Invoice(tuple(lines), subtotal, off, exclusive, inclusive, subtotal - off + exclusive)


@dataclass
class Account:
    """One customer's subscription as the model sees it: items (meter → aggregation, price),
    coupon, tax, and the usage billed in each period (by index)."""

    items: dict[str, tuple[str, Price]]
    coupon: Coupon | None = None
    tax: Tax | None = None
    billed: dict[tuple[int, str], list[Usage]] = field(default_factory=dict)
    once_used: bool = False
    trial_periods: int = 0  # periods 0..n-1 are a trial: their usage is charged 0
    repriced: dict[str, tuple[int, Price]] = field(default_factory=dict)  # meter → (from, new)
    fixed: dict[int, list[Line]] = field(default_factory=dict)  # invoice items per period
    off_lines: list[tuple[str, list[Usage]]] = field(default_factory=list)  # held by Stripe,
    # billed by no usage line (an invoice item's or classic mode's pre-change usage)
    spans: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # meter → first and
    # last period its item bills in (None: on; absent: every period)
    twins: dict[str, Price] = field(default_factory=dict)  # a second item on the meter: its price
    twins_from: dict[str, int] = field(default_factory=dict)  # meter → period its twin was added
    seats: str = ""  # a licensed item's name ("" : none), its unit amount and quantities
    seat_unit: int = 0
    seat_history: list[tuple[int, int]] = field(default_factory=list)  # (from period, quantity)
    mappings: dict[str, dict[str, str]] = field(default_factory=dict)  # meter → dimension value
    # → the meter of the price that bills that value's usage (an item of `items`)

    def seats_at_end(self, period: int) -> int:
        """The licensed quantity when `period` ends (its invoice bills the next in advance)."""
        return [q for k, q in self.seat_history if k <= period][-1]

    def change_seats(
        self, period: int, quantity: int, *, remaining: int, length: int, prorate: bool
    ) -> None:
        """The licensed quantity changed in `period` with `remaining` of its `length` seconds
        left at the proration date: with `prorate`, a credit for the old quantity's unused time
        and a charge for the new one's remaining time, on the period's invoice."""
        old = self.seats_at_end(period)
        if prorate:
            share = Decimal(remaining) / Decimal(length)
            for q, sign in ((old, -1), (quantity, 1)):
                amount = sign * half_up(Decimal(self.seat_unit * q) * share)
                self.fixed.setdefault(period, []).append(
                    Line(self.seats, Decimal(q), amount, fixed=True)
                )
        self.seat_history = [(k, q) for k, q in self.seat_history if k < period]
        self.seat_history.append((period, quantity))

    def price(self, period: int, meter: str) -> Price:
        if meter in self.repriced and period >= self.repriced[meter][0]:
            return self.repriced[meter][1]
        return self.items[meter][1]

    def change_price(self, period: int, meter: str, price: Price, *, flexible: bool) -> None:
        """The item's price replaced mid-period: the old price's usage billed so far becomes
        an invoice item at the old price (flexible) or is billed nowhere (classic); the rest of
        the period's usage is priced by the new price."""
        aggregation = self.items[meter][0]
        usage = self.billed.pop((period, meter), [])
        self.off_lines.append((meter, usage))
        if flexible and usage:
            q = quantity(aggregation, usage)
            self.fixed.setdefault(period, []).append(
                Line(meter, q, self.price(period, meter).amount(q), fixed=True)
            )
        self.repriced[meter] = (period, price)

    def _take_off(self, period: int, meter: str, *, flexible: bool) -> None:
        """The metered price on `meter` leaves its item mid-period: its usage billed so far
        becomes an invoice item at its price (flexible) or is billed nowhere (classic)."""
        aggregation = self.items[meter][0]
        usage = self.billed.pop((period, meter), [])
        self.off_lines.append((meter, usage))
        if flexible and usage:
            q = quantity(aggregation, usage)
            self.fixed.setdefault(period, []).append(
                Line(meter, q, self.price(period, meter).amount(q), fixed=True)
            )
        self.spans[meter] = (self.spans.get(meter, (0, None))[0], period)

    def change_meter(
        self, period: int, meter: str, new: str, aggregation: str, price: Price, *, flexible: bool
    ) -> None:
        """The item's price replaced by `price` on another meter mid-period: the old price is
        taken off (`_take_off`); the new one bills `new`'s usage from the change on, in the
        item's place among the lines."""
        self._take_off(period, meter, flexible=flexible)
        items = list(self.items.items())
        at = [m for m, _ in items].index(meter) + 1
        self.items = dict([*items[:at], (new, (aggregation, price)), *items[at:]])
        self.spans[new] = (period, None)

    def add_item(self, period: int, meter: str, aggregation: str, price: Price) -> None:
        """An item added mid-period: it bills its meter's usage from then on (the last line)."""
        self.items[meter] = (aggregation, price)
        self.spans[meter] = (period, None)

    def add_twin(self, period: int, meter: str, price: Price) -> None:
        """A second item on a meter an item bills, added mid-period: it bills the meter's usage
        from then on (none of that period's usage is drawn after the add: generator.py)."""
        self.twins[meter] = price
        self.twins_from[meter] = period

    def remove_item(self, period: int, meter: str, *, flexible: bool) -> None:
        """An item deleted mid-period: its price is taken off (`_take_off`)."""
        self._take_off(period, meter, flexible=flexible)

    def bills(self, period: int, meter: str) -> bool:
        """Whether an item on `meter` is on the subscription in `period`."""
        first, last = self.spans.get(meter, (0, None))
        return first <= period and (last is None or period <= last)

    def trial(self, period: int) -> bool:
        return period < self.trial_periods

    def route(self, meter: str, dimension: str) -> str:
        """The meter whose price bills usage of `meter` with this dimension value: a mapped
        value's own, else the meter's; `_other` (usage over the guard) always the meter's."""
        if dimension == OTHER:
            return meter
        return self.mappings.get(meter, {}).get(dimension, meter)

    def bill(self, period: int, meter: str, usage: Usage) -> None:
        target = self.route(meter, usage.dimension)
        self.billed.setdefault((period, target), []).append(usage)

    def lines(self, period: int) -> list[Line]:
        out = []
        for meter, (aggregation, _) in self.items.items():  # the subscription's order
            if not self.bills(period, meter):
                continue
            q = quantity(aggregation, self.billed.get((period, meter), []))
            amount = 0 if self.trial(period) else self.price(period, meter).amount(q)
            out.append(Line(meter, q, amount))
        for meter, price in self.twins.items():  # second items, after the first ones
            added = self.twins_from.get(meter)
            if added is not None and period < added:
                continue
            usage = [] if added == period else self.billed.get((period, meter), [])
            q = quantity(self.items[meter][0], usage)
            out.append(Line(meter, q, 0 if self.trial(period) else price.amount(q)))
        if self.seats:  # the next period in advance
            seats = self.seats_at_end(period)
            out.append(Line(self.seats, Decimal(seats), self.seat_unit * seats))
        return out + self.fixed.get(period, [])

    def invoice(self, period: int, *, finalize: bool) -> Invoice:
        """The period's invoice; `finalize` uses a `once` coupon up if it discounts this one."""
        coupon = self.coupon
        if coupon is not None and coupon.duration == "once" and self.once_used:
            coupon = None
        result = invoice(self.lines(period), coupon, self.tax)
        if finalize and coupon is not None and coupon.duration == "once" and result.subtotal > 0:
            self.once_used = True
        return result
