"""A stored `prices` row → the pricing engine's Price. Pure.

The row keeps Stripe's fields flattened (convert.price_row); this puts them back in Stripe's wire
shape so `meter.pricing.price_from_stripe` validates and reads them, the one parse of a price.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from meter.pricing import Price, price_from_stripe

# The `prices` columns the parse reads (`price` is the price id).
PRICE_COLUMNS = (
    "price",
    "currency",
    "billing_scheme",
    "unit_amount",
    "unit_amount_decimal",
    "tiers_mode",
    "tiers",
    "transform_quantity",
    "recurring_interval",
    "recurring_interval_count",
    "usage_type",
)


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def price_from_row(col: Mapping[str, Any]) -> Price:
    """Raises PricingError, ValueError or KeyError for a price the engine cannot evaluate."""
    return price_from_stripe(
        {
            "id": col["price"],
            "currency": col["currency"],
            "billing_scheme": col["billing_scheme"],
            "unit_amount": col["unit_amount"],
            "unit_amount_decimal": col["unit_amount_decimal"],
            "tiers_mode": col["tiers_mode"],
            "tiers": _json(col["tiers"]),
            "transform_quantity": _json(col["transform_quantity"]),
            "recurring": None
            if col["recurring_interval"] is None
            else {
                "interval": col["recurring_interval"],
                "interval_count": col["recurring_interval_count"],
                "usage_type": col["usage_type"],
            },
        }
    )
