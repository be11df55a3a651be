"""Which billing periods are closed, and which one late usage goes to. Pure; the calendar in
`directory.py` reads the periods from billing's tables.

A period is closed once Stripe may have finalized its invoice: an invoice for it is no longer a
draft (`invoice.finalized`/`paid` webhooks), or it ended at least `grace` ago. Stripe finalizes a
cycle invoice after a grace period (1 h by default) and until then bills usage reported for the
period; after that, usage with a timestamp in it is billed by nothing
(https://docs.stripe.com/billing/subscriptions/usage-based/configure-grace-period). Usage never
decides: a period with no later usage closes all the same.

A trial period bills no usage: "during the trial period, any usage accrued doesn't count toward
the total charged" (https://docs.stripe.com/billing/subscriptions/trials). Usage of a trial is
sent while its period is open (Stripe counts it in the meter, and charges nothing for it), but
never carried out of it once closed: carried, it would be charged where Stripe would not. Nor is
usage of a paid period carried into a trial period, where it would not be charged.

A meter event names a customer and a meter, never an item
(https://docs.stripe.com/api/billing/meter-event/create): carried usage is billed by the items
with a price on its meter. So it is carried only into a period of the item on the same meter; an
item that bills the meter no more (deleted, or its price replaced by one on another meter) has no
such period to come, and Stripe bills its usage of a closed period on no invoice (the price taken
off billed its usage at once as an invoice item, or nothing in classic mode:
https://docs.stripe.com/billing/subscriptions/usage-based/manage-billing-setup, "Update prices
mid-cycle").

A period whose invoice was voided (collection paused with `void`, "to temporarily offer a customer
your services for free", https://docs.stripe.com/billing/subscriptions/pause-payment, or an
invoice voided by hand) is final and free: its usage reported later is recorded, never carried
into a period that would charge it (docs/billing.md, "Late usage").

Deleting a Stripe customer "immediately cancels any active subscriptions on the customer"
(https://docs.stripe.com/api/customers/delete), without a final invoice (`invoice_now` defaults
to false, API reference, cancel a subscription): usage of its items not sent by then is billed by
no invoice, and belongs to that customer only, never to a new customer that later takes over our
external id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    """A billing period of one subscription item, [start, end)."""

    start: dt.datetime
    end: dt.datetime
    invoiced: bool  # an invoice covering it is no longer a draft
    trial: bool = False  # inside the subscription's trial: its usage is not charged
    meter: str | None = None  # the event name its price bills ("": none, None: not known)
    removed: bool = False  # its item was deleted from the subscription
    voided: bool = False  # its invoice was voided: no more of its usage is charged
    customer: str | None = None  # the Stripe customer of the item's subscription
    customer_deleted: bool = False  # that customer was deleted: nothing bills its usage now


def is_closed(period: BillingPeriod, now: dt.datetime, grace: dt.timedelta) -> bool:
    return period.invoiced or now >= period.end + grace


def starting_at(periods: Iterable[BillingPeriod], start: dt.datetime) -> BillingPeriod | None:
    """The period that starts at `start` (None: billing does not know it)."""
    return next((p for p in periods if p.start == start), None)


def holding(periods: Iterable[BillingPeriod], at: dt.datetime) -> BillingPeriod | None:
    """The period that contains the instant `at` (None: none known)."""
    return next((p for p in periods if p.start <= at < p.end), None)


def open_target(
    periods: Sequence[BillingPeriod],
    now: dt.datetime,
    grace: dt.timedelta,
    meter: str | None = None,
) -> BillingPeriod | None:
    """Where the item's late usage of `meter` is carried: its latest period on that meter that
    is still open and not a trial, i.e. the invoice that will bill it (None: no such period is
    known yet, the usage waits, or none will come: `bills_no_more`)."""
    candidates = [
        p for p in periods if not p.trial and not is_closed(p, now, grace) and _on(p, meter)
    ]
    return max(candidates, key=lambda p: p.start, default=None)


def bills_no_more(periods: Sequence[BillingPeriod], meter: str) -> bool:
    """The item will bill `meter` in no later period: it was deleted, or its latest period's
    price is on another meter. Its usage of a closed period is then billed by no invoice."""
    latest = max(periods, key=lambda p: p.start, default=None)
    return latest is not None and (latest.removed or not _on(latest, meter))


def overlapping(
    own: BillingPeriod, others: Iterable[BillingPeriod], meter: str
) -> list[BillingPeriod]:
    """The other windows billing `meter` that overlap `own` without being the same window.

    Stripe bills each item's line of a `last` meter with the customer's latest value stamped
    inside that item's window, and meter events carry no item: two windows that share some
    time but not both bounds (subscriptions with other anchors, an item added mid-period) take
    their values from one stream, so each can show its own usage only if the two unions are
    equal. Windows that are equal share one unit; disjoint ones never meet."""
    return [
        p
        for p in others
        if p.meter == meter
        and p.start < own.end
        and own.start < p.end
        and (p.start, p.end) != (own.start, own.end)
    ]


def _on(period: BillingPeriod, meter: str | None) -> bool:
    return meter is None or period.meter is None or period.meter == meter
