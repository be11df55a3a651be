"""How a subscription's state changes what its next invoice bills: trials, cancellation at the
period end, paused collection. Pure; each rule is Stripe's documented behaviour.

- Trial: "during the trial period, any usage accrued doesn't count toward the total charged"
  (https://docs.stripe.com/billing/subscriptions/trials). A trial always ends a billing period
  ("A new billing cycle also begins for the customer when the trial ends"), so a period is wholly
  a trial or wholly paid.
- Cancellation at the period end: the subscription does not renew, so the invoice that closes
  the period bills its usage in arrears and no licensed fee in advance
  (https://docs.stripe.com/billing/subscriptions/cancel).
- Paused collection: invoices are still created, but Stripe does not collect them; by
  `pause_collection.behavior` they stay drafts (`keep_as_draft`), are marked uncollectible
  (`mark_uncollectible`) or voided (`void`)
  (https://docs.stripe.com/billing/subscriptions/pause-payment).
"""

from __future__ import annotations

from meter.pricing.model import Period

# pause_collection.behavior → the status Stripe gives the invoices created while paused.
PAUSED_INVOICE_STATUS = {
    "keep_as_draft": "draft",
    "mark_uncollectible": "uncollectible",
    "void": "void",
}


def in_trial(period: Period, trial_start: int | None, trial_end: int | None) -> bool:
    """Whether `period` lies within the subscription's trial (its usage is not charged)."""
    if trial_start is None or trial_end is None:
        return False
    return trial_start <= period.start and period.end <= trial_end


def renews_after(
    period: Period, cancel_at_period_end: bool, cancel_at: int | None, current_end: int | None
) -> bool:
    """Whether the subscription goes on after `period`: not when it ends at or before the
    period's end, at the end of its current period (`current_end`) by `cancel_at_period_end`
    or at `cancel_at` (then nothing is billed in advance). An earlier period did renew."""
    ends = current_end if cancel_at_period_end else cancel_at
    return ends is None or ends > period.end


def paused_invoice_status(
    behavior: str | None, resumes_at: int | None = None, invoice_date: int | None = None
) -> str | None:
    """The status of an invoice created at `invoice_date` while collection is paused with
    `behavior`; None when collection is not paused then (none, or it resumes at `resumes_at`,
    "the time after which the subscription will resume collecting payments", API reference,
    subscription `pause_collection`), or the behavior is unknown: nothing is assumed."""
    if not behavior:
        return None
    if resumes_at is not None and invoice_date is not None and resumes_at <= invoice_date:
        return None
    return PAUSED_INVOICE_STATUS.get(behavior)
