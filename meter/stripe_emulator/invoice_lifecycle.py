"""Building invoices and moving them through draft → open → paid (or payment failed).

Line amounts come from `pricing` (pure); usage for metered prices comes from the meter's events in
the line's period, aggregated with the meter's formula, as Stripe bills meters.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from meter.stripe_emulator import invoice_items, meter_math, meters, pricing
from meter.stripe_emulator.core import Emulator
from meter.stripe_emulator.state import State
from meter.stripe_emulator.wire import Obj, StripeError, invalid, new_id, strip_private


def usage(state: State, price: Obj, customer: str, start: int, end: int) -> Decimal:
    """Aggregated meter value for [start, end) of a metered price's meter."""
    meter = state.find(price["recurring"]["meter"])
    if meter is None:
        return Decimal(0)
    pts = [p for p in meters.points(state, meter, customer) if start <= p.timestamp < end]
    # "If the overall cycle usage is negative, Stripe reports the invoice line item usage
    # quantity as 0" (docs: usage-based meters, "Fix incorrect usage data").
    return max(meter_math.aggregate(meter["default_aggregation"]["formula"], pts), Decimal(0))


def in_trial(subscription: Obj | None, span: tuple[int, int]) -> bool:
    """Whether `span` lies in the subscription's trial: "during the trial period, any usage
    accrued doesn't count toward the total charged" (docs: billing/subscriptions/trials)."""
    sub = subscription or {}
    start, end = sub.get("trial_start"), sub.get("trial_end")
    return start is not None and end is not None and start <= span[0] and span[1] <= end


def metered_line(
    state: State, price: Obj, customer: str, span: tuple[int, int], sub: Obj | None, item: str
) -> Obj:
    """A metered item's line for `span`: its meter's usage, charged 0 in a trial."""
    qty = usage(state, price, customer, *span)
    trial = in_trial(sub, span)
    return line(
        price,
        qty,
        span,
        subscription=None if sub is None else sub["id"],
        item=item,
        amount=0 if trial else None,
        description=f"Trial period for {price.get('nickname') or price['product']}"
        if trial
        else None,
    )


def is_metered(price: Obj) -> bool:
    recurring = price.get("recurring") or {}
    return recurring.get("usage_type") == "metered"


def line(
    price: Obj,
    quantity: Decimal,
    period: tuple[int, int],
    *,
    subscription: str | None,
    item: str | None,
    amount: int | None = None,
    proration: bool = False,
    description: str | None = None,
) -> Obj:
    """An invoice line in Stripe's shape (2025+: `pricing` and `parent`)."""
    model = pricing.PriceModel.from_price(price)
    value = pricing.amount(model, quantity) if amount is None else amount
    qty: Any = meter_math.as_number(quantity)
    return {
        "id": new_id("il"),
        "object": "line_item",
        "amount": value,
        "currency": price["currency"],
        "description": description or f"{qty} × {price.get('nickname') or price['product']}",
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": None,
        "livemode": False,
        "metadata": {},
        "parent": {
            "type": "subscription_item_details",
            "subscription_item_details": {
                "invoice_item": None,
                "proration": proration,
                "subscription": subscription,
                "subscription_item": item,
            },
        },
        "period": {"start": period[0], "end": period[1]},
        "pricing": {
            "type": "price_details",
            "price_details": {"price": price["id"], "product": price["product"]},
            "unit_amount_decimal": price.get("unit_amount_decimal"),
        },
        "quantity": qty,
        "taxes": [],
    }


def applicable_coupon(state: State, subscription: Obj | None, invoice_date: int) -> str | None:
    """The subscription's coupon if it still applies to an invoice dated `invoice_date`.

    Stripe's coupon `duration`: "once" applies to one invoice and "repeating" for
    `duration_in_months` months from when the discount started (API reference, coupon object;
    the Discount's `end` is "the date that this discount will end" for repeating coupons).
    The repeating window is the Discount's own `start`..`end`.
    """
    coupon_id = (subscription or {}).get("_coupon")
    coupon = state.find(coupon_id) if coupon_id else None
    if subscription is None or coupon is None:
        return None
    if coupon.get("duration") == "repeating":
        ids = subscription.get("discounts") or []
        discount = state.find(ids[0]) if ids else None
        if discount is not None and discount.get("end") is not None:
            end = int(discount["end"])
        else:
            start = subscription.get("start_date") or invoice_date
            end = pricing.add_interval(start, "month", int(coupon.get("duration_in_months") or 0))
        if invoice_date >= end:
            return None
    return str(coupon_id)


def _line_rates(line: Obj, subscription: Obj | None) -> list[Obj]:
    """An item's own tax rates, else the subscription's default ones (Stripe: item-level
    `tax_rates` "override the subscription's `default_tax_rates`")."""
    if subscription is None:
        return []
    details = (line.get("parent") or {}).get("subscription_item_details") or {}
    for item in subscription["items"]["data"]:
        if item["id"] == details.get("subscription_item") and item.get("tax_rates"):
            return list(item["tax_rates"])
    return list(subscription.get("default_tax_rates") or [])


def tax_amount(rate_id: str, inclusive: bool, amount: int, taxable: int) -> Obj:
    """One tax amount in Stripe's shape, as `line.taxes[]` and `invoice.total_taxes[]` carry it."""
    return {
        "amount": amount,
        "tax_behavior": "inclusive" if inclusive else "exclusive",
        "tax_rate_details": {"tax_rate": rate_id},
        "taxability_reason": "standard_rated",
        "taxable_amount": taxable,
        "type": "tax_rate_details",
    }


def apply_taxes(lines: list[Obj], subscription: Obj | None, off: int) -> list[Obj]:
    """Tax each line on its amount after its share of the invoice discount; fill `line.taxes`
    and `line.discount_amounts`; return the per-rate totals.

    Per line, per rate, rounded half-up to the minor unit (Stripe rounds tax per line item). An
    exclusive rate adds `taxable × p/100`; inclusive rates are inside the amount, so every rate
    applies to the net `taxable × 100/(100 + Σ inclusive p)`. The discount is shared over the
    positive discountable lines in proportion to their amounts, floors first and the remaining
    units to the largest fractions (Stripe does not document its rule; see the README).
    """
    weights = [ln["amount"] if ln.get("discountable", True) and ln["amount"] > 0 else 0
               for ln in lines]  # fmt: skip
    base = sum(weights)
    shares = [0] * len(lines)
    if off and base > 0:
        exact = [Decimal(off) * w / base for w in weights]
        shares = [int(e) for e in exact]
        order = sorted(range(len(lines)), key=lambda i: (-(exact[i] - shares[i]), i))
        for i in order[: off - sum(shares)]:
            shares[i] += 1
    totals: dict[str, Obj] = {}
    for ln, share in zip(lines, shares, strict=True):
        if share:
            ln["discount_amounts"] = [{"amount": share, "discount": None}]
        rates = _line_rates(ln, subscription)
        taxable = ln["amount"] - share
        inclusive = sum((Decimal(str(r["percentage"])) for r in rates if r["inclusive"]),
                        Decimal(0))  # fmt: skip
        net = Decimal(taxable) * 100 / (100 + inclusive)
        taxes = []
        for rate in rates:
            amount = pricing.round_amount(net * Decimal(str(rate["percentage"])) / 100)
            taxes.append((rate, amount))
        base_amount = taxable - sum(a for r, a in taxes if r["inclusive"])
        ln["taxes"] = [
            tax_amount(rate["id"], rate["inclusive"], amount, base_amount) for rate, amount in taxes
        ]
        for rate, amount in taxes:
            entry = totals.setdefault(
                rate["id"],
                {"tax_rate": rate["id"], "inclusive": rate["inclusive"], "amount": 0,
                 "taxable_amount": 0},
            )  # fmt: skip
            entry["amount"] += amount
            entry["taxable_amount"] += base_amount
    return list(totals.values())


def coupon_discount(state: State, coupon_id: str | None, subtotal: int) -> int:
    coupon = state.find(coupon_id) if coupon_id else None
    if coupon is None:
        return 0
    percent = coupon.get("percent_off")
    return pricing.discount(
        subtotal, None if percent is None else Decimal(str(percent)), coupon.get("amount_off")
    )


def build(
    state: State,
    *,
    customer: str,
    lines: list[Obj],
    currency: str,
    billing_reason: str,
    period: tuple[int, int],
    subscription: Obj | None,
    created: int,
    preview: bool = False,
) -> Obj:
    """A draft invoice (or an `upcoming` preview) with totals worked out."""
    invoice_id = ("upcoming_" if preview else "") + new_id("in")
    for item in lines:
        item["invoice"] = invoice_id
    if not preview:
        invoice_items.attach(state, lines, invoice_id)
    # An upcoming invoice will be dated at the end of its period, not at the preview's time.
    invoice_date = period[1] if billing_reason == "upcoming" else created
    coupon = applicable_coupon(state, subscription, invoice_date)
    amounts = _amounts(state, lines, subscription, coupon)
    used = bool(coupon and not preview and amounts["subtotal"] > 0 and subscription is not None)
    if used and coupon and subscription is not None:
        _use_once(state, subscription, coupon)
    return {
        "_coupon_used": used,
        "id": invoice_id,
        "object": "invoice",
        **amounts,
        "amount_paid": 0,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": not preview,
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "customer": customer,
        "due_date": None,
        "effective_at": None,
        "hosted_invoice_url": None,
        "lines": {
            "object": "list",
            "data": lines,
            "has_more": False,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None,
        "number": None,
        "parent": None
        if subscription is None
        else {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {
                "metadata": subscription.get("metadata") or {},
                "subscription": subscription["id"],
            },
        },
        "period_end": period[1],
        "period_start": period[0],
        "status": "draft",
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "webhooks_delivered_at": None,
        "_finalize_at": None,
    }


def _amounts(state: State, lines: list[Obj], subscription: Obj | None, coupon: str | None) -> Obj:
    """The invoice's money fields for these lines and this coupon (taxes filled on the lines)."""
    subtotal = sum(item["amount"] for item in lines)
    off = coupon_discount(state, coupon, subtotal)
    for item in lines:  # apply_taxes fills in the shares of this discount
        item["discount_amounts"] = []
    total_taxes = apply_taxes(lines, subscription, off)
    total = subtotal - off + sum(t["amount"] for t in total_taxes if not t["inclusive"])
    return {
        "amount_due": max(total, 0),
        "amount_remaining": max(total, 0),
        "discounts": [coupon] if coupon else [],
        "subtotal": subtotal,
        "subtotal_excluding_tax": subtotal
        - sum(t["amount"] for t in total_taxes if t["inclusive"]),
        "total": total,
        "total_excluding_tax": subtotal - off,
        "total_taxes": [
            tax_amount(t["tax_rate"], t["inclusive"], t["amount"], t["taxable_amount"])
            for t in total_taxes
        ],
        "total_discount_amounts": [{"amount": off, "discount": coupon}] if off else [],
    }


def refresh_usage(state: State, invoice: Obj) -> None:
    """At finalization, each metered line takes the latest quantity of its period, and the
    totals follow: "During finalization, Stripe updates the invoice to reflect the latest
    quantity for its billing period" (docs: usage-based billing, configure grace period). Usage
    that reaches Stripe after this is in no finalized invoice."""
    lines: list[Obj] = invoice["lines"]["data"]
    sub_id = subscription_of(invoice)
    sub = state.find(sub_id) if sub_id else None
    changed = False
    for i, ln in enumerate(lines):
        details = (ln.get("parent") or {}).get("subscription_item_details") or {}
        price_id = ((ln.get("pricing") or {}).get("price_details") or {}).get("price")
        price = state.find(price_id) if price_id else None
        # An invoice item's amount was fixed when it was made (a flexible mode's usage up to a
        # price change included), so only the period's own usage lines are refreshed.
        fixed = details.get("proration") or details.get("invoice_item") or ln.get("_fixed")
        if fixed or price is None or not is_metered(price):
            continue
        span = (ln["period"]["start"], ln["period"]["end"])
        fresh = metered_line(
            state, price, invoice["customer"], span, sub, details.get("subscription_item") or ""
        )
        lines[i] = {**fresh, "id": ln["id"], "invoice": invoice["id"]}
        changed = True
    if not changed:
        return
    coupons = invoice.get("discounts") or []
    coupon = coupons[0] if coupons else None
    # A `once` coupon this draft did not use up (nothing to discount when it was made) is this
    # invoice's only if no other invoice used it meanwhile; used now, it is gone.
    unused = bool(coupon) and not invoice.get("_coupon_used") and sub is not None
    if unused and sub is not None and coupon and sub.get("_coupon") != coupon:
        coupon = None if _is_once(state, coupon) else coupon
        invoice["discounts"] = [coupon] if coupon else []
    invoice.update(_amounts(state, lines, sub, coupon))
    if unused and sub is not None and coupon and invoice["subtotal"] > 0:
        invoice["_coupon_used"] = True
        _use_once(state, sub, coupon)


def _is_once(state: State, coupon_id: str) -> bool:
    coupon = state.find(coupon_id)
    return coupon is not None and coupon.get("duration") == "once"


def _use_once(state: State, subscription: Obj, coupon_id: str) -> None:
    # A `once` coupon is used up by the first invoice it discounts, and Stripe then removes the
    # discount from the subscription; the next invoice (and its preview) is at full price.
    # (Which invoice counts as first when the first ones are free, e.g. in a trial, is not
    # documented; the emulator waits for an invoice with a positive subtotal.)
    coupon = state.find(coupon_id)
    if coupon is not None and coupon.get("duration") == "once":
        subscription["_coupon"] = None
        subscription["discounts"] = []


def public(invoice: Obj) -> Obj:
    """The invoice without the emulator's private bookkeeping keys."""
    clean: Obj = strip_private(invoice)
    return clean


def subscription_of(invoice: Obj) -> str | None:
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or {}
    sub: str | None = details.get("subscription")
    return sub


def finalize(emu: Emulator, invoice: Obj, now: int) -> None:
    if invoice["status"] != "draft":
        raise invalid("This invoice is already finalized.", None, "invoice_not_editable")
    refresh_usage(emu.state, invoice)
    number = sum(1 for i in emu.state.all("invoice") if i.get("number")) + 1
    invoice["number"] = f"{emu.state.objects[invoice['customer']]['invoice_prefix']}-{number:04d}"
    invoice["status"] = "open" if invoice["amount_due"] > 0 else "paid"
    invoice["status_transitions"]["finalized_at"] = now
    invoice["effective_at"] = now
    invoice["hosted_invoice_url"] = f"https://invoice.stripe.com/i/{invoice['id']}"
    emu.emit("invoice.finalized", public(invoice), {"status": "draft"})
    if invoice["status"] == "paid":
        _mark_paid(emu, invoice, now)


def mark_uncollectible(emu: Emulator, invoice: Obj, now: int) -> None:
    """An open invoice written off: not collected, nothing paid."""
    if invoice["status"] != "open":
        raise invalid("Only open invoices can be marked uncollectible.", None)
    invoice["status"] = "uncollectible"
    invoice["status_transitions"]["marked_uncollectible_at"] = now
    emu.emit("invoice.marked_uncollectible", public(invoice), {"status": "open"})


def payment_outcome(state: State, customer: str) -> str:
    return state.payment_outcomes.get(customer) or state.payment_outcomes.get("*") or "succeed"


def pay(emu: Emulator, invoice: Obj, now: int, *, force_outcome: str | None = None) -> None:
    """Attempt payment: the outcome set with `/_emulator/payments` (default: succeed)."""
    if invoice["status"] == "draft":
        finalize(emu, invoice, now)
    if invoice["status"] == "paid":
        return
    if invoice["status"] != "open":
        raise invalid(f"Invoice is {invoice['status']} and cannot be paid.", None)
    invoice["attempt_count"] += 1
    invoice["attempted"] = True
    outcome = force_outcome or payment_outcome(emu.state, invoice["customer"])
    if outcome == "succeed":
        _mark_paid(emu, invoice, now)
        return
    # Stripe's smart retries would try again later; the emulator waits for an explicit pay.
    invoice["next_payment_attempt"] = None
    emu.emit("invoice.payment_failed", public(invoice))
    _subscription_status(emu, invoice, "past_due")
    raise StripeError(
        402,
        "Your card was declined.",
        type_="card_error",
        code="card_declined",
        param=None,
    )


def _mark_paid(emu: Emulator, invoice: Obj, now: int) -> None:
    previous = {"status": invoice["status"], "amount_paid": invoice["amount_paid"]}
    invoice["status"] = "paid"
    invoice["amount_paid"] = invoice["amount_due"]
    invoice["amount_remaining"] = 0
    invoice["status_transitions"]["paid_at"] = now
    emu.emit("invoice.paid", public(invoice), previous)
    emu.emit("invoice.payment_succeeded", public(invoice), previous)
    _subscription_status(emu, invoice, "active")


def _subscription_status(emu: Emulator, invoice: Obj, status: str) -> None:
    sub_id = subscription_of(invoice)
    sub = emu.state.find(sub_id) if sub_id else None
    if sub is None or sub["status"] in ("canceled", "trialing", status):
        return
    if status == "active" and sub["status"] not in ("past_due", "incomplete", "unpaid"):
        return
    previous = {"status": sub["status"]}
    sub["status"] = status
    sub["latest_invoice"] = invoice["id"]
    from meter.stripe_emulator.subscriptions import public_sub

    emu.emit("customer.subscription.updated", public_sub(sub), previous)
