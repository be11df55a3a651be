"""The pricing engine's one error: a price, coupon or tax rate it cannot evaluate."""

from __future__ import annotations

from meter.errors import MeteringError


class PricingError(MeteringError):
    """A price (or coupon, tax rate, quantity) that Stripe would not accept or bill.

    Prices come from Stripe, so this is a data error on our side (a bad sync or a model we do
    not support), not a client mistake: it maps to a 500-class response.
    """

    type = "pricing_error"
