"""Products, prices (per-unit, tiered, packages, metered on a meter), coupons and tax rates."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from meter.stripe_emulator.core import Req, Route
from meter.stripe_emulator.resources import apply_updates, deleted, metadata_of
from meter.stripe_emulator.wire import (
    Obj,
    bool_param,
    invalid,
    missing,
    new_id,
    paginate,
    str_param,
)


def routes() -> list[Route]:
    return [
        Route("POST", "/v1/products", create_product),
        Route("GET", "/v1/products", list_products),
        Route("GET", "/v1/products/{id}", retrieve_product),
        Route("POST", "/v1/products/{id}", update_product),
        Route("DELETE", "/v1/products/{id}", delete_product),
        Route("POST", "/v1/prices", create_price),
        Route("GET", "/v1/prices", list_prices),
        Route("GET", "/v1/prices/{id}", retrieve_price),
        Route("POST", "/v1/prices/{id}", update_price),
        Route("POST", "/v1/coupons", create_coupon),
        Route("GET", "/v1/coupons", list_coupons),
        Route("GET", "/v1/coupons/{id}", retrieve_coupon),
        Route("POST", "/v1/coupons/{id}", update_coupon),
        Route("DELETE", "/v1/coupons/{id}", delete_coupon),
        Route("POST", "/v1/tax_rates", create_tax_rate),
        Route("GET", "/v1/tax_rates", list_tax_rates),
        Route("GET", "/v1/tax_rates/{id}", retrieve_tax_rate),
        Route("POST", "/v1/tax_rates/{id}", update_tax_rate),
    ]


# -- products ------------------------------------------------------------------------------------
def _new_product(req: Req, params: dict[str, Any]) -> Obj:
    now = req.state.now()
    product: Obj = {
        "id": params.get("id") or new_id("prod", 14),
        "object": "product",
        "active": bool_param(params, "active", True),
        "created": now,
        "default_price": None,
        "description": params.get("description"),
        "images": [],
        "livemode": False,
        "marketing_features": [],
        "metadata": params.get("metadata") or {},
        "name": str_param(params, "name"),
        "tax_code": None,
        "type": "service",
        "unit_label": params.get("unit_label"),
        "updated": now,
        "url": None,
    }
    if product["id"] in req.state.objects:
        raise invalid(f"Product already exists: {product['id']}", "id", "resource_already_exists")
    req.state.put(product)
    req.emu.emit("product.created", product)
    return product


def create_product(req: Req) -> Obj:
    return _new_product(req, req.params)


def retrieve_product(req: Req) -> Obj:
    return req.state.get("product", req.match["id"])


def update_product(req: Req) -> Obj:
    product = req.state.get("product", req.match["id"])
    previous = apply_updates(
        req, product, ("name", "description", "unit_label", "default_price"), ("active",)
    )
    if previous:
        product["updated"] = req.state.now()
        req.emu.emit("product.updated", product, previous)
    return product


def delete_product(req: Req) -> Obj:
    product = req.state.get("product", req.match["id"])
    if any(p["product"] == product["id"] for p in req.state.all("price")):
        raise invalid("This product cannot be deleted because it has one or more prices.")
    req.state.delete(product["id"])
    req.emu.emit("product.deleted", product)
    return deleted(product)


def list_products(req: Req) -> Obj:
    products = req.state.all("product")
    if "active" in req.params:
        active = bool_param(req.params, "active")
        products = [p for p in products if p["active"] == active]
    return paginate(products, req.params, "/v1/products")


# -- prices --------------------------------------------------------------------------------------
def _decimal(params: dict[str, Any], whole: str, dec: str, param: str) -> str | None:
    """`unit_amount` (integer) or `unit_amount_decimal` (string), as a decimal string."""
    raw = params.get(dec) if params.get(dec) not in (None, "") else params.get(whole)
    if raw in (None, ""):
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise invalid(f"Invalid decimal: {raw}", param) from None
    if value < 0:
        raise invalid(f"{param} must be non-negative", param)
    return format(value.normalize(), "f")


def _tiers(raw: Any) -> list[Obj]:
    if not isinstance(raw, list) or not raw:
        raise missing("tiers")
    tiers = []
    for i, tier in enumerate(raw):
        up_to = tier.get("up_to")
        if up_to in (None, ""):
            raise missing(f"tiers[{i}][up_to]")
        unit = _decimal(tier, "unit_amount", "unit_amount_decimal", f"tiers[{i}][unit_amount]")
        flat = _decimal(tier, "flat_amount", "flat_amount_decimal", f"tiers[{i}][flat_amount]")
        tiers.append(
            {
                "flat_amount": None if flat is None else int(Decimal(flat)),
                "flat_amount_decimal": flat,
                "unit_amount": None if unit is None else int(Decimal(unit)),
                "unit_amount_decimal": unit,
                "up_to": None if up_to == "inf" else int(up_to),
            }
        )
    if tiers[-1]["up_to"] is not None:
        raise invalid("The last tier must have up_to=inf.", f"tiers[{len(tiers) - 1}][up_to]")
    return tiers


def _take_lookup_key(req: Req, price_id: str | None) -> None:
    """A lookup key names one price in the account, archived ones included: another price's
    key is a 400 unless `transfer_lookup_key` moves it over, atomically (API reference, create
    and update a price, `transfer_lookup_key`: "will atomically remove the lookup key from the
    existing price, and assign it to this price")."""
    key = req.params.get("lookup_key")
    if key in (None, ""):
        return
    holder = next(
        (p for p in req.state.all("price") if p.get("lookup_key") == key and p["id"] != price_id),
        None,
    )
    if holder is None:
        return
    if not bool_param(req.params, "transfer_lookup_key", False):
        raise invalid(f"A price (`{holder['id']}`) already uses that lookup key.", "lookup_key")
    holder["lookup_key"] = None
    req.emu.emit("price.updated", holder, {"lookup_key": key})


def create_price(req: Req) -> Obj:
    params = req.params
    currency = str_param(params, "currency").lower()
    if product_data := params.get("product_data"):
        product_id = _new_product(req, product_data)["id"]
    else:
        product_id = str_param(params, "product")
        req.state.get("product", product_id, "product")
    scheme = params.get("billing_scheme") or "per_unit"
    recurring = params.get("recurring")
    price: Obj = {
        "id": new_id("price", 24),
        "object": "price",
        "active": bool_param(params, "active", True),
        "billing_scheme": scheme,
        "created": req.state.now(),
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": params.get("lookup_key"),
        "metadata": metadata_of(req),
        "nickname": params.get("nickname"),
        "product": product_id,
        "recurring": None,
        "tax_behavior": params.get("tax_behavior") or "unspecified",
        "tiers": None,  # includable: on the wire only when expanded (wire.INCLUDABLE)
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": None,
        "unit_amount_decimal": None,
    }
    if recurring:
        interval = recurring.get("interval")
        if interval not in ("day", "week", "month", "year"):
            raise invalid(
                "recurring[interval] must be day, week, month or year", "recurring[interval]"
            )
        usage_type = recurring.get("usage_type") or "licensed"
        meter = recurring.get("meter")
        if usage_type == "metered":
            if not meter:
                raise missing("recurring[meter]")
            req.state.get("billing.meter", str(meter), "recurring[meter]")
        price["recurring"] = {
            "interval": interval,
            "interval_count": int(recurring.get("interval_count") or 1),
            "meter": meter or None,
            "trial_period_days": None,
            "usage_type": usage_type,
        }
    if scheme == "tiered":
        if params.get("tiers_mode") not in ("graduated", "volume"):
            raise missing("tiers_mode")
        price["tiers_mode"] = params["tiers_mode"]
        price["tiers"] = _tiers(params.get("tiers"))
    else:
        amount = _decimal(params, "unit_amount", "unit_amount_decimal", "unit_amount")
        if amount is None:
            raise missing("unit_amount")
        price["unit_amount_decimal"] = amount
        whole = Decimal(amount)
        price["unit_amount"] = int(whole) if whole == whole.to_integral_value() else None
    if transform := params.get("transform_quantity"):
        if scheme == "tiered":
            raise invalid("transform_quantity cannot be used with tiers", "transform_quantity")
        divide_by = int(transform.get("divide_by") or 0)
        if divide_by < 1:
            raise missing("transform_quantity[divide_by]")
        # Both fields are required (API reference, price create `transform_quantity`).
        rounding = transform.get("round")
        if rounding in (None, ""):
            raise missing("transform_quantity[round]")
        if rounding not in ("up", "down"):
            raise invalid(
                "transform_quantity[round] must be up or down", "transform_quantity[round]"
            )
        price["transform_quantity"] = {"divide_by": divide_by, "round": rounding}
    _take_lookup_key(req, None)
    req.state.put(price)
    req.emu.emit("price.created", price)
    return price


def retrieve_price(req: Req) -> Obj:
    return req.state.get("price", req.match["id"])


def update_price(req: Req) -> Obj:
    price = req.state.get("price", req.match["id"])
    _take_lookup_key(req, price["id"])
    previous = apply_updates(req, price, ("nickname", "lookup_key"), ("active",))
    if previous:
        req.emu.emit("price.updated", price, previous)
    return price


def list_prices(req: Req) -> Obj:
    prices = req.state.all("price")
    for name in ("product", "currency", "type"):
        if value := req.get(name):
            prices = [p for p in prices if p.get(name) == value]
    if "active" in req.params:
        active = bool_param(req.params, "active")
        prices = [p for p in prices if p["active"] == active]
    if keys := req.get("lookup_keys"):
        prices = [p for p in prices if p.get("lookup_key") in keys]
    return paginate(prices, req.params, "/v1/prices")


# -- coupons -------------------------------------------------------------------------------------
def create_coupon(req: Req) -> Obj:
    params = req.params
    percent = params.get("percent_off")
    amount = params.get("amount_off")
    if (percent in (None, "")) == (amount in (None, "")):
        raise invalid("Exactly one of percent_off or amount_off is required.", "percent_off")
    if amount not in (None, "") and not params.get("currency"):
        raise missing("currency")
    duration = params.get("duration") or "once"
    if duration not in ("once", "repeating", "forever"):
        raise invalid("duration must be once, repeating or forever", "duration")
    coupon: Obj = {
        "id": params.get("id") or new_id("x", 8)[2:],
        "object": "coupon",
        "amount_off": None if amount in (None, "") else int(amount),
        "created": req.state.now(),
        "currency": (params.get("currency") or None) and str(params["currency"]).lower(),
        "duration": duration,
        "duration_in_months": (
            int(params["duration_in_months"]) if duration == "repeating" else None
        ),
        "livemode": False,
        "max_redemptions": None,
        "metadata": metadata_of(req),
        "name": params.get("name"),
        "percent_off": None if percent in (None, "") else float(Decimal(str(percent))),
        "redeem_by": None,
        "times_redeemed": 0,
        "valid": True,
    }
    if coupon["id"] in req.state.objects:
        raise invalid(f"Coupon already exists: {coupon['id']}", "id", "resource_already_exists")
    req.state.put(coupon)
    req.emu.emit("coupon.created", coupon)
    return coupon


def retrieve_coupon(req: Req) -> Obj:
    return req.state.get("coupon", req.match["id"])


def update_coupon(req: Req) -> Obj:
    coupon = req.state.get("coupon", req.match["id"])
    if previous := apply_updates(req, coupon, ("name",)):
        req.emu.emit("coupon.updated", coupon, previous)
    return coupon


def delete_coupon(req: Req) -> Obj:
    coupon = req.state.get("coupon", req.match["id"])
    req.state.delete(coupon["id"])
    req.emu.emit("coupon.deleted", coupon)
    return deleted(coupon)


def list_coupons(req: Req) -> Obj:
    return paginate(req.state.all("coupon"), req.params, "/v1/coupons")


# -- tax rates -----------------------------------------------------------------------------------
def create_tax_rate(req: Req) -> Obj:
    """A manual tax rate. `percentage` and `inclusive` are fixed once created (Stripe lets only
    display fields, `active` and metadata change)."""
    params = req.params
    display_name = str_param(params, "display_name")
    raw = params.get("percentage")
    if raw in (None, ""):
        raise missing("percentage")
    try:
        percentage = Decimal(str(raw))
    except InvalidOperation:
        raise invalid("Invalid decimal: percentage", "percentage") from None
    if not Decimal(0) <= percentage <= Decimal(100):
        raise invalid("percentage must be between 0 and 100", "percentage")
    if "inclusive" not in params:
        raise missing("inclusive")
    rate: Obj = {
        "id": new_id("txr", 24),
        "object": "tax_rate",
        "active": bool_param(params, "active", True),
        "country": params.get("country"),
        "created": req.state.now(),
        "description": params.get("description"),
        "display_name": display_name,
        "effective_percentage": float(percentage),
        "inclusive": bool_param(params, "inclusive"),
        "jurisdiction": params.get("jurisdiction"),
        "livemode": False,
        "metadata": metadata_of(req),
        "percentage": float(percentage),
        "state": params.get("state"),
        "tax_type": params.get("tax_type"),
    }
    req.state.put(rate)
    req.emu.emit("tax_rate.created", rate)
    return rate


def retrieve_tax_rate(req: Req) -> Obj:
    return req.state.get("tax_rate", req.match["id"])


def update_tax_rate(req: Req) -> Obj:
    rate = req.state.get("tax_rate", req.match["id"])
    if previous := apply_updates(req, rate, ("display_name", "description"), ("active",)):
        req.emu.emit("tax_rate.updated", rate, previous)
    return rate


def list_tax_rates(req: Req) -> Obj:
    return paginate(req.state.all("tax_rate"), req.params, "/v1/tax_rates")
