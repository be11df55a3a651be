"""Stripe objects (plain dicts in wire shape) → the row values meter stores. Pure.

Only the gateway knows Stripe's SDK types; everything past it sees the JSON shape, which is
documented and versioned by the pinned API version.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

Obj = Mapping[str, Any]

# Where our own ids live in Stripe metadata.
META_CUSTOMER = "meter_customer"
META_TENANT = "meter_tenant"
# Stripe customer ids start with this; events and the API accept them beside our own ids.
STRIPE_CUSTOMER_PREFIX = "cus_"


def ts(value: Any) -> dt.datetime | None:
    """A Stripe unix timestamp as an aware datetime."""
    if value in (None, ""):
        return None
    return dt.datetime.fromtimestamp(int(value), dt.UTC)


def ref(value: Any) -> str | None:
    """The id of an expandable field, expanded or not."""
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        return str(value["id"])
    return str(value)


def _decimal_text(value: Any) -> str:
    # The SDK parses Stripe's decimal strings (tiers' `unit_amount_decimal`) into Decimal; store
    # them back as the exact strings Stripe sent.
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def jsonb(value: Any) -> str:
    return orjson.dumps(value if value is not None else {}, default=_decimal_text).decode()


def metadata(obj: Obj) -> dict[str, str]:
    return {str(k): str(v) for k, v in (obj.get("metadata") or {}).items()}


def customer_link(obj: Obj) -> tuple[str | None, str | None]:
    """(external id, tenant) that a Stripe object names in its metadata, if any."""
    md = metadata(obj)
    return md.get(META_CUSTOMER) or None, md.get(META_TENANT) or None


def customer_row(obj: Obj) -> tuple[Any, ...]:
    return (
        obj["id"],
        obj.get("email"),
        obj.get("name"),
        jsonb(metadata(obj)),
        bool(obj.get("deleted")),
    )


def product_row(obj: Obj) -> tuple[Any, ...]:
    return (
        obj["id"],
        obj.get("name") or "",
        bool(obj.get("active", True)),
        jsonb(metadata(obj)),
        bool(obj.get("deleted")),
    )


def price_row(obj: Obj) -> tuple[Any, ...]:
    recurring = obj.get("recurring") or {}
    tiers = obj.get("tiers")
    transform = obj.get("transform_quantity")
    return (
        obj["id"],
        ref(obj.get("product")) or "",
        bool(obj.get("active", True)),
        obj.get("currency") or "usd",
        obj.get("nickname"),
        obj.get("lookup_key"),
        obj.get("billing_scheme") or "per_unit",
        obj.get("unit_amount"),
        None if obj.get("unit_amount_decimal") is None else str(obj["unit_amount_decimal"]),
        obj.get("tiers_mode"),
        None if tiers is None else jsonb(tiers),
        None if transform is None else jsonb(transform),
        recurring.get("interval"),
        recurring.get("interval_count"),
        recurring.get("usage_type"),
        recurring.get("meter"),
        jsonb(metadata(obj)),
    )


def meter_row(obj: Obj) -> tuple[Any, ...]:
    mapping = obj.get("customer_mapping") or {}
    value = obj.get("value_settings") or {}
    return (
        obj["id"],
        obj["event_name"],
        obj.get("display_name"),
        (obj.get("default_aggregation") or {}).get("formula") or "sum",
        mapping.get("event_payload_key") or "stripe_customer_id",
        value.get("event_payload_key") or "value",
        obj.get("event_time_window"),
        obj.get("status") or "active",
    )


def _items(obj: Obj) -> list[Obj]:
    items = obj.get("items") or {}
    data: list[Obj] = items.get("data") or [] if isinstance(items, Mapping) else []
    return data


def subscription_row(obj: Obj) -> tuple[Any, ...]:
    items = _items(obj)
    first = items[0] if items else {}
    pause = obj.get("pause_collection") or {}
    return (
        obj["id"],
        ref(obj.get("customer")),
        obj["status"],
        obj.get("currency"),
        ts(first.get("current_period_start")),
        ts(first.get("current_period_end")),
        ts(obj.get("trial_start")),
        ts(obj.get("trial_end")),
        bool(obj.get("cancel_at_period_end")),
        ts(obj.get("cancel_at")),
        ts(obj.get("canceled_at")),
        ts(obj.get("ended_at")),
        pause.get("behavior"),
        ts(pause.get("resumes_at")),
        ref(obj.get("latest_invoice")),
        jsonb(metadata(obj)),
        ts(obj.get("created")),
    )


def billing_mode(obj: Obj) -> str:
    """A subscription's billing mode: `billing_mode.type` (a plain string in preview versions
    of 2025); classic when absent (API versions before billing modes behave as classic)."""
    raw = obj.get("billing_mode")
    kind = raw.get("type") if isinstance(raw, dict) else raw
    return "flexible" if kind == "flexible" else "classic"


def item_added(item: Obj) -> dt.datetime | None:
    """When a subscription item was added (its `created`): its metered price bills from then."""
    return ts(item.get("created"))


def pending_item_row(obj: Obj, deleted: bool) -> tuple[Any, ...]:
    """(id, customer, subscription, subscription item, amount, currency, proration, period
    start, period end, invoice, deleted) of an InvoiceItem (2025+ shape: the subscription under
    `parent.subscription_details`; older ones at the top)."""
    details = (obj.get("parent") or {}).get("subscription_details") or {}
    period = obj.get("period") or {}
    return (
        obj["id"],
        ref(obj.get("customer")),
        ref(details.get("subscription")) or ref(obj.get("subscription")),
        ref(details.get("subscription_item")) or ref(obj.get("subscription_item")),
        int(obj.get("amount") or 0),
        obj.get("currency") or "usd",
        bool(obj.get("proration")),
        ts(period.get("start")),
        ts(period.get("end")),
        ref(obj.get("invoice")),
        deleted or bool(obj.get("deleted")),
    )


def invoice_item_lines(obj: Obj) -> list[tuple[Any, ...]]:
    """The lines of an invoice that bill an invoice item, each as a `pending_item_row` taken by
    this invoice (only the lines the payload carries: a webhook lists the first page)."""
    rows = []
    for ln in (obj.get("lines") or {}).get("data") or []:
        # A line of an invoice item sits under `invoice_item_details`; a subscription item's
        # proration names its invoice item under `subscription_item_details`.
        parent = ln.get("parent") or {}
        details = (
            parent.get("invoice_item_details") or parent.get("subscription_item_details") or {}
        )
        ident = ref(details.get("invoice_item")) or ref(ln.get("invoice_item"))
        if not ident:
            continue
        period = ln.get("period") or {}
        rows.append(
            (
                ident,
                ref(obj.get("customer")),
                invoice_subscription(obj),
                ref(details.get("subscription_item")),
                int(ln.get("amount") or 0),
                ln.get("currency") or obj.get("currency") or "usd",
                bool(details.get("proration") or ln.get("proration")),
                ts(period.get("start")),
                ts(period.get("end")),
                obj["id"],
                False,
            )
        )
    return rows


def discount_ids(obj: Obj) -> list[str]:
    """The ids of a subscription's `discounts` (each an id, or the object when expanded)."""
    return [str(ref(d)) for d in obj.get("discounts") or [] if ref(d)]


def discounts(obj: Obj) -> list[dict[str, Any]] | None:
    """A subscription's discounts as stored (see migrations/0006_adjustments.sql), or None when
    they are not expanded down to the coupon (`expand[]=discounts.source.coupon`): a webhook
    payload names them by id only."""
    out = []
    for d in obj.get("discounts") or []:
        if not isinstance(d, dict):
            return None
        # The coupon sits under `source` in current API versions, at the top in older ones.
        coupon = (d.get("source") or {}).get("coupon") or d.get("coupon")
        if not isinstance(coupon, dict):
            return None
        out.append(
            {
                "id": d["id"],
                "start": d.get("start"),
                "end": d.get("end"),
                "coupon": {
                    k: coupon.get(k)
                    for k in (
                        "id",
                        "percent_off",
                        "amount_off",
                        "currency",
                        "duration",
                        "duration_in_months",
                    )
                },
            }
        )
    return out


def item_rows(obj: Obj) -> list[tuple[Any, ...]]:
    """(id, subscription, price, product, quantity, meter, period start, period end, tax
    rates as jsonb, position in the subscription's `items`: the order of its invoice's lines)."""
    rows = []
    for position, item in enumerate(_items(obj)):
        price = item.get("price") or {}
        recurring = price.get("recurring") or {}
        rows.append(
            (
                item["id"],
                obj["id"],
                ref(price) or "",
                ref(price.get("product")),
                item.get("quantity"),
                recurring.get("meter"),
                ts(item["current_period_start"]),
                ts(item["current_period_end"]),
                jsonb(tax_rates(item.get("tax_rates"))),
                position,
            )
        )
    return rows


def tax_rates(raw: Any) -> list[dict[str, Any]]:
    """Embedded TaxRate objects as stored (see migrations/0006_adjustments.sql)."""
    return [
        {
            "id": r.get("id"),
            "percentage": r.get("percentage"),
            "inclusive": bool(r.get("inclusive")),
            "display_name": r.get("display_name"),
        }
        for r in raw or []
        if isinstance(r, dict)
    ]


def invoice_row(obj: Obj) -> tuple[Any, ...]:
    parent = obj.get("parent") or {}
    details = parent.get("subscription_details") or {}
    subscription = ref(details.get("subscription")) or ref(obj.get("subscription"))
    return (
        obj["id"],
        ref(obj.get("customer")),
        subscription,
        obj.get("status") or "draft",
        obj.get("billing_reason"),
        obj.get("currency") or "usd",
        int(obj.get("subtotal") or 0),
        int(obj.get("total") or 0),
        int(obj.get("amount_due") or 0),
        int(obj.get("amount_paid") or 0),
        int(obj.get("amount_remaining") or 0),
        int(obj.get("attempt_count") or 0),
        ts(obj.get("next_payment_attempt")),
        ts(obj.get("period_start")),
        ts(obj.get("period_end")),
        obj.get("hosted_invoice_url"),
        ts(obj.get("created")),
    )


def invoice_subscription(obj: Obj) -> str | None:
    return invoice_row(obj)[2]  # type: ignore[no-any-return]
