"""Rolling subscription periods forward: invoices created, finalized, paid or failed.

Runs whenever a clock moves: a test clock's `advance`, `/_emulator/clock/advance`, and a periodic
tick for customers on the real-time clock. Each step follows Stripe's order of events.
"""

from __future__ import annotations

import contextlib

from meter.stripe_emulator import invoice_lifecycle, pricing, subscriptions
from meter.stripe_emulator.core import Emulator
from meter.stripe_emulator.state import State
from meter.stripe_emulator.wire import Obj, StripeError, strip_private

TRIAL_WILL_END_SECONDS = 3 * 86400
MAX_ROLLS = 1000  # a guard against a clock moved decades ahead


def _clock_of(state: State, customer: str) -> str | None:
    cus = state.objects.get(customer) or {}
    clock: str | None = cus.get("test_clock")
    return clock


def run_due(emu: Emulator, clock_id: str | None) -> None:
    """Catch every subscription on `clock_id` (None: the real-time clock) up to its now."""
    state = emu.state
    for sub in state.all("subscription"):
        if _clock_of(state, sub["customer"]) != clock_id or sub["status"] not in subscriptions.LIVE:
            continue
        now = state.now_for_customer(sub["customer"])
        for _ in range(MAX_ROLLS):
            _trial_will_end(emu, sub, now)
            if sub["status"] in ("canceled", "paused") or subscriptions.period(sub)[1] > now:
                break
            _roll(emu, sub)
    for invoice in state.all("invoice"):
        if _clock_of(state, invoice["customer"]) != clock_id:
            continue
        due = invoice.get("_finalize_at")
        now = state.now_for_customer(invoice["customer"])
        if invoice["status"] == "draft" and due is not None and due <= now:
            invoice["_finalize_at"] = None
            invoice_lifecycle.finalize(emu, invoice, now)
            if invoice.get("_uncollectible") and invoice["status"] == "open":
                invoice_lifecycle.mark_uncollectible(emu, invoice, now)
                continue
            # A failed charge is reported by events and the past_due status, not raised here.
            with contextlib.suppress(StripeError):
                invoice_lifecycle.pay(emu, invoice, now)


def paused_behavior(sub: Obj, at: int) -> str | None:
    """The subscription's `pause_collection.behavior` at `at`; None once `resumes_at` ("the
    time after which the subscription will resume collecting payments") has passed."""
    pause = sub.get("pause_collection") or {}
    resumes = pause.get("resumes_at")
    if resumes not in (None, "") and int(resumes) <= at:
        return None
    behavior: str | None = pause.get("behavior")
    return behavior


def _trial_will_end(emu: Emulator, sub: Obj, now: int) -> None:
    trial_end = sub.get("trial_end")
    if (
        sub["status"] == "trialing"
        and trial_end
        and not sub["_trial_will_end_sent"]
        and trial_end - TRIAL_WILL_END_SECONDS <= now
    ):
        sub["_trial_will_end_sent"] = True
        emu.emit("customer.subscription.trial_will_end", strip_private(sub))


def _roll(emu: Emulator, sub: Obj) -> None:
    """Close the current period: bill usage in arrears, start the next one, bill it in advance."""
    state = emu.state
    start, end = subscriptions.period(sub)
    usage = subscriptions.metered_lines(state, sub, start, end)
    pending, sub["_pending"] = sub["_pending"], []
    if subscriptions.ends_with_period(sub):
        subscriptions.end_now(emu, sub, end)
        draft(emu, sub, usage + pending, "subscription_cycle", (start, end), end)
        return
    previous: Obj = {"items": strip_private(sub["items"])}
    if sub["status"] == "trialing":
        previous["status"] = "trialing"
        missing_pm = not sub.get("default_payment_method") and not (
            (state.objects.get(sub["customer"]) or {})
            .get("invoice_settings", {})
            .get("default_payment_method")
        )
        behavior = sub["trial_settings"]["end_behavior"]["missing_payment_method"]
        if missing_pm and behavior == "pause":
            sub["status"] = "paused"
            emu.emit("customer.subscription.paused", strip_private(sub), {"status": "trialing"})
            return
        sub["status"] = "active"
    interval = sub["items"]["data"][0]["price"]["recurring"]
    new_end = pricing.add_interval(end, interval["interval"], interval["interval_count"])
    for item in sub["items"]["data"]:
        item["current_period_start"], item["current_period_end"] = end, new_end
    emu.emit("customer.subscription.updated", strip_private(sub), previous)
    lines = usage + pending + subscriptions.licensed_lines(sub, end, new_end)
    draft(emu, sub, lines, "subscription_cycle", (start, end), end)


def draft(
    emu: Emulator, sub: Obj, lines: list[Obj], reason: str, span: tuple[int, int], at: int
) -> None:
    invoice = invoice_lifecycle.build(
        emu.state,
        customer=sub["customer"],
        lines=lines,
        currency=sub["currency"],
        billing_reason=reason,
        period=span,
        subscription=sub,
        created=at,
    )
    # Paused collection (docs: billing/subscriptions/pause-payment): invoices are still created;
    # `keep_as_draft` leaves them drafts that do not advance, `mark_uncollectible` finalizes them
    # as usual and marks them uncollectible instead of charging, `void` voids them.
    behavior = paused_behavior(sub, at)
    if behavior == "void":
        invoice["status"] = "void"
        invoice["status_transitions"]["voided_at"] = at
    elif behavior == "keep_as_draft":
        invoice["auto_advance"] = False
    else:
        invoice["_finalize_at"] = at + emu.config.invoice_grace_seconds
        invoice["_uncollectible"] = behavior == "mark_uncollectible"
    emu.state.put(invoice)
    sub["latest_invoice"] = invoice["id"]
    emu.emit("invoice.created", strip_private(invoice))
