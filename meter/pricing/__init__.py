"""Pure pricing engine: Stripe prices, coupons and tax rates → amounts in minor units, to the cent.

No I/O and no Stripe SDK types: callers hand in our frozen models (`model.*_from_stripe` read
Stripe's wire shape into them). Modules: `model` (the data), `amounts` (one line), `adjustments`
(coupons and taxes), `invoice` (a projected invoice), `lifecycle` (trials, cancellation, paused
collection), `runrate` (usage projection), `currencies`.
"""

from meter.pricing.adjustments import TaxAmount, allocate, discount_total, line_taxes
from meter.pricing.amounts import (
    billable_quantity,
    exact_amount,
    flat_fees,
    graduated_parts,
    line_amount,
    round_minor,
    tier_index,
    volume_exact,
)
from meter.pricing.calendar import add_months
from meter.pricing.errors import PricingError
from meter.pricing.invoice import InvoiceProjection, Line, price_items, project_invoice
from meter.pricing.lifecycle import in_trial, paused_invoice_status, renews_after
from meter.pricing.model import (
    BillingScheme,
    Coupon,
    Discount,
    Duration,
    Interval,
    Period,
    Price,
    Recurring,
    Round,
    SubscriptionItem,
    TaxRate,
    Tier,
    TiersMode,
    TransformQuantity,
    UsageType,
    coupon_from_stripe,
    price_from_stripe,
    tax_rate_from_stripe,
)
from meter.pricing.runrate import (
    HOLD_LAST,
    INSUFFICIENT_HISTORY,
    PERIOD_ENDED,
    TRAILING,
    RunRate,
    elapsed_fraction,
    min_history,
    project_usage,
    trailing_start,
    trailing_window,
)

__all__ = [
    "HOLD_LAST",
    "INSUFFICIENT_HISTORY",
    "PERIOD_ENDED",
    "TRAILING",
    "BillingScheme",
    "Coupon",
    "Discount",
    "Duration",
    "Interval",
    "InvoiceProjection",
    "Line",
    "Period",
    "Price",
    "PricingError",
    "Recurring",
    "Round",
    "RunRate",
    "SubscriptionItem",
    "TaxAmount",
    "TaxRate",
    "Tier",
    "TiersMode",
    "TransformQuantity",
    "UsageType",
    "add_months",
    "allocate",
    "billable_quantity",
    "coupon_from_stripe",
    "discount_total",
    "elapsed_fraction",
    "exact_amount",
    "flat_fees",
    "graduated_parts",
    "in_trial",
    "line_amount",
    "line_taxes",
    "min_history",
    "paused_invoice_status",
    "price_from_stripe",
    "price_items",
    "project_invoice",
    "project_usage",
    "renews_after",
    "round_minor",
    "tax_rate_from_stripe",
    "tier_index",
    "trailing_start",
    "trailing_window",
    "volume_exact",
]
