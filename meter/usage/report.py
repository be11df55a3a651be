"""The usage response, priced by the pricing engine. Pure: the handler hands in what it read.

Amounts are integers in the currency's minor unit with `currency` beside them, computed from
exact quantities; quantities are decimal strings written by `num` alone, one rule for every
quantity of the answer (items, projections, invoice lines, history); times are unix seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, NamedTuple

from meter.events import UsageEvent
from meter.pricing import (
    InvoiceProjection,
    Line,
    Period,
    PricingError,
    RunRate,
    SubscriptionItem,
    add_months,
    in_trial,
    line_amount,
    paused_invoice_status,
    project_usage,
    renews_after,
)
from meter.pricing.model import Interval
from meter.usage.store import PendingItem, Plan, PlanItem
from meter.usage.tally import Tally

Doc = dict[str, Any]
HOLD_MAX = "hold_max_value"
FIXED = "fixed_fee"
# The pricing engine applies one discount per invoice; with several, the invoice says so.
STACKED_NOTE = "only the first of the subscription's discounts is applied"
# How the run rate extrapolates each aggregation (project_usage knows sum, count and last).
_FORMULA = {"sum": "sum", "count": "count", "unique_count": "count", "last": "last", "max": "last"}


class Terms(NamedTuple):
    """What the subscription's state does to the invoice of one period (pricing/lifecycle.py)."""

    usage_charged: bool = True  # False in a trial: metered lines are billed 0
    renews: bool = True  # False when it ends with the period: no licensed fee in advance
    pause_behavior: str | None = None  # pause_collection.behavior
    paused_status: str | None = None  # the status Stripe gives the invoice while paused


def terms_of(plan: Plan, period: Period) -> Terms:
    """The terms of `period`'s invoice. Cancellation and paused collection are the
    subscription's state now: they apply to the invoice of its current period (and later
    ones), not to those Stripe already created."""
    ends = [i.current.end for i in plan.items if not i.removed]
    current_end = max(ends) if ends else None
    upcoming = current_end is not None and period.end >= current_end
    return Terms(
        usage_charged=not in_trial(period, plan.trial_start, plan.trial_end),
        renews=renews_after(period, plan.cancel_at_period_end, plan.cancel_at, current_end),
        pause_behavior=plan.pause_behavior if upcoming else None,
        # The cycle invoice is created at the period's end.
        paused_status=paused_invoice_status(plan.pause_behavior, plan.pause_resumes_at, period.end)
        if upcoming
        else None,
    )


# Stripe's precision for decimal quantities (`quantity_decimal`: "up to 12 decimal places").
QUANTITY_PLACES = 12
_QUANTUM = Decimal(1).scaleb(-QUANTITY_PLACES)


def num(value: Decimal) -> str:
    """A quantity as the answers write it: rounded half-even to QUANTITY_PLACES decimal places,
    plain text without exponent or trailing zeros ("1200", "0.25", "54661.224489795918").

    Display only: amounts are priced from the exact quantity before this. Precision grows with
    the integer part, so a run-rate projection past 10^16 is never cut in its integer digits.
    """
    context = Context(prec=max(value.adjusted(), 0) + QUANTITY_PLACES + 2)
    text = format(value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN, context=context), "f")
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return "0" if text == "-0" else text


def period_doc(period: Period) -> Doc:
    return {"start": period.start, "end": period.end}


def in_period(event: UsageEvent, period: Period) -> bool:
    return period.start * 1000 <= event.timestamp_ms < period.end * 1000


def fold_pending(
    selection: Sequence[tuple[PlanItem, Period]],
    tallies: dict[tuple[str, str], Tally],
    events: Iterable[UsageEvent],
    recent_since: int | None = None,
) -> int:
    """Fold each pending event into every item that bills its meter in its period (Stripe bills
    a meter event on each item with a price on its meter); returns how many were folded. Those
    at or after `recent_since` (unix s) count in the trailing window too."""
    since_ms = None if recent_since is None else recent_since * 1000
    folded = 0
    for event in events:
        billed = False
        for item, period in selection:
            if item.meter == event.meter and in_period(event, period):
                tallies.setdefault((item.id, event.meter), Tally()).add_event(event, since_ms)
                billed = True
        folded += billed
    return folded


def invoice_period(item: PlanItem, period: Period) -> Period:
    """The billing period of the invoice that bills `item` over `period`: the item's whole
    current period when `period` is the part of it its price bills, else `period` itself."""
    current = item.current
    return current if current.start <= period.start and period.end <= current.end else period


def pending_lines(pending: Sequence[PendingItem], period: Period) -> list[Line]:
    """The subscription's pending invoice items as lines of its next invoice: fixed amounts,
    not discountable when prorations ("Defaults to false for prorations", API reference,
    invoice line items)."""
    return [
        Line(
            "pending",
            p.item_id or "",
            "",
            "invoice_item",
            Decimal(1),
            p.amount,
            p.period or period,
            discountable=not p.proration and p.amount > 0,
        )
        for p in pending
    ]


def next_period(period: Period, item: PlanItem) -> Period:
    """The period after `period` (when a licensed fee in the upcoming invoice applies), anchored on
    `period.start` as Stripe anchors billing cycles, so month ends do not drift."""
    recurring = item.price.recurring if item.price is not None else None
    if recurring is None or recurring.interval in (Interval.DAY, Interval.WEEK):
        return Period(period.end, period.end + (period.end - period.start))
    months = recurring.interval_count * (12 if recurring.interval is Interval.YEAR else 1)
    return Period(period.end, add_months(period.start, 2 * months))


def _run_rate(
    item: PlanItem, quantity: Decimal, period: Period, now: int, recent: Decimal | None
) -> RunRate | None:
    if item.price is None:
        return None
    # A period voided below zero bills 0 (pricing.price_items), and so projects from 0; a
    # window with voids (negative) has no rate to measure: 0.
    rate = project_usage(
        item.price,
        max(quantity, Decimal(0)),
        period,
        now,
        formula=_FORMULA.get(item.aggregation, "sum"),
        recent=None if recent is None else max(recent, Decimal(0)),
    )
    return rate._replace(method=HOLD_MAX) if item.aggregation == "max" else rate


def item_doc(
    item: PlanItem, period: Period, tally: Tally | None, now: int, *, usage_charged: bool = True
) -> tuple[Doc, Decimal]:
    """One subscription item's usage, amount and run rate; and the projected quantity. With
    `usage_charged=False` (a trial period) a metered item shows its quantity at amount 0."""
    price = item.price
    doc: Doc = {
        "subscription_item": item.id,
        "price": item.price_id,
        "pricing_model": None if price is None else price.model,
        "usage_type": "metered" if item.metered else "licensed",
        "currency": None if price is None else price.currency,
        "period": period_doc(period),
        "removed": item.removed,
    }
    if item.price_error:
        doc["price_error"] = item.price_error
    if not item.metered:
        quantity = Decimal(1 if item.quantity is None else item.quantity)
        amount = None if price is None else line_amount(price, quantity)
        doc |= {
            "meter": None,
            "aggregation": None,
            "quantity": num(quantity),
            "amount": amount,
            "projection": {"method": FIXED, "quantity": num(quantity), "amount": amount},
        }
        return doc, quantity
    tally = tally or Tally()
    quantity = tally.quantity(item.aggregation)
    rate = _run_rate(item, quantity, period, now, tally.recent(item.aggregation))
    doc |= {
        "meter": item.meter,
        "aggregation": item.aggregation,
        "quantity": num(quantity),
        "events": tally.events,
        "pending_events": tally.pending,
        "amount": None if rate is None else rate.amount_so_far if usage_charged else 0,
        "usage_charged": usage_charged,
        "projection": None
        if rate is None
        else {
            "method": rate.method,
            "elapsed_fraction": num(rate.elapsed_fraction),
            "window": None if rate.window is None else period_doc(rate.window),
            "quantity": num(rate.projected_quantity),
            "amount": rate.projected_amount if usage_charged else 0,
        },
    }
    projected = quantity if rate is None else rate.projected_quantity
    return doc, projected


def invoice_doc(invoice: InvoiceProjection, discounts: int = 0, terms: Terms | None = None) -> Doc:
    """The invoice as Stripe will create it: `usage_charged` false in a trial period, `renews`
    false when the subscription ends with the period, and with collection paused the status
    Stripe gives it (`collection`); a voided invoice asks for nothing (`amount_due` 0)."""
    terms = terms or Terms()
    return {
        "currency": invoice.currency,
        "period": period_doc(invoice.period),
        "lines": [
            {
                "kind": line.kind,
                "subscription_item": line.item_id,
                "price": line.price_id,
                "pricing_model": line.pricing_model,
                "quantity": num(line.quantity),
                "amount": line.amount,
                "discount_amount": line.discount_amount,
                "tax": sum(t.amount for t in line.taxes if not t.inclusive),
                "period": period_doc(line.period),
            }
            for line in invoice.lines
        ],
        "subtotal": invoice.subtotal,
        "discount": invoice.discount,
        "tax": invoice.tax,
        "total": invoice.total,
        "amount_due": 0 if terms.paused_status == "void" else invoice.amount_due,
        "tax_included": invoice.tax_included,
        "usage_charged": terms.usage_charged,
        "renews": terms.renews,
        "collection": None
        if terms.paused_status is None
        else {
            "paused": terms.pause_behavior,
            "invoice_status": terms.paused_status,
            "collected_automatically": False,
        },
        "note": STACKED_NOTE if discounts > 1 else None,
    }


def engine_items(selection: Sequence[tuple[PlanItem, Period]]) -> list[SubscriptionItem]:
    return [
        SubscriptionItem(
            price=item.price, quantity=item.quantity, id=item.id, tax_rates=item.tax_rates
        )
        for item, _ in selection
        if item.price is not None
    ]


def error_doc(exc: PricingError) -> Doc:
    return {"type": exc.type, "message": exc.message, "param": exc.param}
