"""Our own frozen copies of Stripe's Price, Coupon, Discount and TaxRate, as synced from Stripe.

The engine never sees SDK objects: `*_from_stripe` read the wire shape (a mapping: the JSON as
stored, or `stripe_object.to_dict()`) into these dataclasses and reject what Stripe itself
rejects, so that the arithmetic modules can trust their inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from meter.pricing import currencies
from meter.pricing.calendar import add_months
from meter.pricing.errors import PricingError


class BillingScheme(StrEnum):
    PER_UNIT = "per_unit"
    TIERED = "tiered"


class TiersMode(StrEnum):
    GRADUATED = "graduated"
    VOLUME = "volume"


class Round(StrEnum):
    UP = "up"
    DOWN = "down"


class UsageType(StrEnum):
    LICENSED = "licensed"
    METERED = "metered"


class Interval(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


class Duration(StrEnum):
    ONCE = "once"
    REPEATING = "repeating"
    FOREVER = "forever"


ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Tier:
    """One tier. `up_to=None` is Stripe's `inf`; `up_to` is inclusive ("Up to and including to
    this quantity will be contained in the tier", API reference, `price.tiers.up_to`)."""

    up_to: Decimal | None
    unit_amount_decimal: Decimal = ZERO
    flat_amount_decimal: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class TransformQuantity:
    divide_by: int
    round: Round = Round.UP


@dataclass(frozen=True, slots=True)
class Recurring:
    interval: Interval = Interval.MONTH
    interval_count: int = 1
    usage_type: UsageType = UsageType.LICENSED


@dataclass(frozen=True, slots=True)
class Price:
    """A Stripe price. Amounts are decimals in the currency's minor unit, as Stripe stores them."""

    currency: str
    billing_scheme: BillingScheme = BillingScheme.PER_UNIT
    unit_amount_decimal: Decimal | None = None
    tiers_mode: TiersMode | None = None
    tiers: tuple[Tier, ...] = ()
    transform_quantity: TransformQuantity | None = None
    recurring: Recurring | None = None
    id: str = ""
    # Derived once here, not as properties: each usage response reads them a dozen times.
    metered: bool = field(init=False, repr=False, compare=False)
    model: str = field(init=False, repr=False, compare=False)  # as the usage API reports it

    def __post_init__(self) -> None:
        _validate_price(self)
        recurring = self.recurring
        metered = recurring is not None and recurring.usage_type is UsageType.METERED
        if self.billing_scheme is BillingScheme.TIERED:
            model = f"tiered_{self.tiers_mode}"
        else:
            model = "package" if self.transform_quantity else "per_unit"
        object.__setattr__(self, "metered", metered)
        object.__setattr__(self, "model", model)


def _validate_price(price: Price) -> None:
    # The checks mirror what POST /v1/prices refuses, so an invalid price is a sync bug.
    if price.currency != currencies.normalize(price.currency):
        raise PricingError("currency must be a lowercase ISO code", param="currency")
    if price.billing_scheme is BillingScheme.PER_UNIT:
        if price.unit_amount_decimal is None or price.unit_amount_decimal < 0:
            raise PricingError(
                "per_unit prices need a non-negative unit amount", param="unit_amount"
            )
        if price.tiers:
            raise PricingError("tiers need billing_scheme=tiered", param="tiers")
    else:
        if price.tiers_mode is None or not price.tiers:
            raise PricingError("tiered prices need tiers and tiers_mode", param="tiers")
        if price.transform_quantity is not None:
            # "transform_quantity only works with billing_scheme=per_unit. It is incompatible
            # with tiered pricing." (docs: billing/subscriptions/quantity-transformation)
            raise PricingError("transform_quantity cannot be used with tiers", param="tiers")
        _validate_tiers(price.tiers)
    if price.transform_quantity is not None and price.transform_quantity.divide_by < 1:
        raise PricingError("divide_by must be a positive integer", param="transform_quantity")


def _validate_tiers(tiers: tuple[Tier, ...]) -> None:
    previous = ZERO
    for index, tier in enumerate(tiers):
        last = index == len(tiers) - 1
        if (tier.up_to is None) != last:
            raise PricingError("only the last tier has up_to=inf", param=f"tiers[{index}][up_to]")
        if tier.up_to is not None:
            if tier.up_to < 0 or (index > 0 and tier.up_to <= previous):
                raise PricingError("tiers must ascend", param=f"tiers[{index}][up_to]")
            previous = tier.up_to
        if tier.unit_amount_decimal < 0 or tier.flat_amount_decimal < 0:
            raise PricingError("tier amounts must be non-negative", param=f"tiers[{index}]")


@dataclass(frozen=True, slots=True)
class Coupon:
    """`percent_off` (e.g. 25.5) or `amount_off` (minor units, in `currency`), never both."""

    id: str = ""
    percent_off: Decimal | None = None
    amount_off: int | None = None
    currency: str | None = None
    duration: Duration = Duration.ONCE
    duration_in_months: int | None = None

    def __post_init__(self) -> None:
        if (self.percent_off is None) == (self.amount_off is None):
            raise PricingError("a coupon has exactly one of percent_off and amount_off")
        if self.percent_off is not None and not ZERO < self.percent_off <= 100:
            raise PricingError("percent_off must be in (0, 100]", param="percent_off")
        if self.amount_off is not None and (self.amount_off <= 0 or self.currency is None):
            raise PricingError("amount_off needs a positive amount and a currency")
        if self.duration is Duration.REPEATING and not self.duration_in_months:
            raise PricingError("repeating coupons need duration_in_months")


@dataclass(frozen=True, slots=True)
class Discount:
    """A coupon applied to a subscription from `start`; `end` is set for repeating coupons.

    Stripe's Discount object: "end — If the coupon has a duration of repeating, the date that
    this discount will end. If the coupon has a duration of once or forever, this attribute will
    be null." A `once` discount is removed once an invoice has used it, so a discount that is
    still attached applies to the next invoice.
    """

    coupon: Coupon
    start: int = 0
    end: int | None = None

    @classmethod
    def starting(cls, coupon: Coupon, start: int) -> Discount:
        """The discount a coupon gives from `start`, with Stripe's `end` for repeating ones."""
        months = coupon.duration_in_months if coupon.duration is Duration.REPEATING else None
        return cls(coupon, start, None if months is None else add_months(start, months))

    def used_up(self, last_billed_at: int | None) -> bool:
        """Whether an invoice created at `last_billed_at` (the subscription's latest with a
        positive subtotal) used up this `once` discount: Stripe removes it after "one invoice"
        (coupon `duration`), maybe before any event says so. Which invoice counts first when
        the first ones are free is not documented; the emulator makes the same choice."""
        return (
            self.coupon.duration is Duration.ONCE
            and last_billed_at is not None
            and last_billed_at >= self.start
        )

    def applies_at(self, invoice_date: int) -> bool:
        """Whether an invoice created at `invoice_date` gets this discount."""
        if invoice_date < self.start:
            return False
        if self.coupon.duration is Duration.REPEATING:
            return self.end is None or invoice_date < self.end
        return True


@dataclass(frozen=True, slots=True)
class TaxRate:
    """A manual tax rate: `percentage` (up to 4 decimal places), added on top or included."""

    percentage: Decimal
    inclusive: bool = False
    id: str = ""
    display_name: str = ""

    def __post_init__(self) -> None:
        if not ZERO <= self.percentage <= 100:
            raise PricingError("percentage must be in [0, 100]", param="percentage")


# -- reading Stripe's wire shape -----------------------------------------------------------------
def decimal_of(raw: object, param: str) -> Decimal:
    """A Stripe decimal string (or integer) as a Decimal; floats go through `str` to stay exact."""
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise PricingError(f"not a decimal: {raw!r}", param=param) from None
    if not value.is_finite():
        raise PricingError(f"not a finite decimal: {raw!r}", param=param)
    return value


def _amount(obj: Mapping[str, Any], name: str, param: str) -> Decimal | None:
    # Stripe returns both `x` (integer or null) and `x_decimal` (string); the decimal is exact.
    raw = obj.get(f"{name}_decimal")
    if raw is None:
        raw = obj.get(name)
    return None if raw is None else decimal_of(raw, param)


def price_from_stripe(price: Mapping[str, Any]) -> Price:
    """A Price from Stripe's price object (tiers must have been expanded: `expand[]=tiers`)."""
    tiers = tuple(
        Tier(
            up_to=None if t.get("up_to") in (None, "inf") else decimal_of(t["up_to"], "up_to"),
            unit_amount_decimal=_amount(t, "unit_amount", f"tiers[{i}]") or ZERO,
            flat_amount_decimal=_amount(t, "flat_amount", f"tiers[{i}]") or ZERO,
        )
        for i, t in enumerate(price.get("tiers") or ())
    )
    transform = price.get("transform_quantity")
    recurring = price.get("recurring")
    return Price(
        id=str(price.get("id") or ""),
        currency=str(price["currency"]),
        billing_scheme=BillingScheme(price.get("billing_scheme") or "per_unit"),
        unit_amount_decimal=_amount(price, "unit_amount", "unit_amount"),
        tiers_mode=TiersMode(price["tiers_mode"]) if price.get("tiers_mode") else None,
        tiers=tiers,
        transform_quantity=None
        if not transform
        else TransformQuantity(int(transform["divide_by"]), Round(transform.get("round") or "up")),
        recurring=None
        if not recurring
        else Recurring(
            interval=Interval(recurring["interval"]),
            interval_count=int(recurring.get("interval_count") or 1),
            usage_type=UsageType(recurring.get("usage_type") or "licensed"),
        ),
    )


def coupon_from_stripe(coupon: Mapping[str, Any]) -> Coupon:
    percent = coupon.get("percent_off")
    amount = coupon.get("amount_off")
    return Coupon(
        id=str(coupon.get("id") or ""),
        percent_off=None if percent is None else decimal_of(percent, "percent_off"),
        amount_off=None if amount is None else int(amount),
        currency=coupon.get("currency") or None,
        duration=Duration(coupon.get("duration") or "once"),
        duration_in_months=coupon.get("duration_in_months"),
    )


def tax_rate_from_stripe(rate: Mapping[str, Any]) -> TaxRate:
    return TaxRate(
        id=str(rate.get("id") or ""),
        percentage=decimal_of(rate["percentage"], "percentage"),
        inclusive=bool(rate.get("inclusive")),
        display_name=str(rate.get("display_name") or ""),
    )


@dataclass(frozen=True, slots=True)
class Period:
    """A billing period `[start, end)` in Unix seconds."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise PricingError("a period ends after it starts", param="period")


@dataclass(frozen=True, slots=True)
class SubscriptionItem:
    """A subscription item: licensed items carry a `quantity`, metered ones are billed on usage."""

    price: Price
    quantity: int | None = None
    id: str = ""
    tax_rates: tuple[TaxRate, ...] = field(default=())
