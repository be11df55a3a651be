"""Seams to billing data: Stripe customer ids (the `CustomerDirectory` port, meter/core/ports.py,
filled in by the process's wiring), and the billing periods of subscription items.

Both read the billing module's tables (meter/billing/, migrations/0003_billing.sql), never write
them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Protocol

from meter.core.ports import Conn as Conn
from meter.core.ports import CustomerDirectory as CustomerDirectory
from meter.pricing import Period, in_trial
from reporter import queries
from reporter.periods import BillingPeriod


class PeriodCalendar(Protocol):
    """The billing periods of subscription items, each with whether its invoice is final."""

    grace: dt.timedelta  # a period is closed this long after its end (periods.is_closed)

    async def periods(
        self, conn: Conn, items: Collection[str]
    ) -> Mapping[str, list[BillingPeriod]]:
        """Every known period of each item, oldest first; an item billing does not know is
        left out (its periods count as open: nothing says they were invoiced)."""
        ...


class BillingCalendar:
    """From billing's subscription_item_periods and invoices (kept by Stripe's webhooks)."""

    def __init__(self, grace: dt.timedelta) -> None:
        self.grace = grace

    async def periods(
        self, conn: Conn, items: Collection[str]
    ) -> Mapping[str, list[BillingPeriod]]:
        if not items:
            return {}
        out: dict[str, list[BillingPeriod]] = {}
        for r in await conn.fetch(queries.ITEM_BILLING_PERIODS, sorted(items)):
            start, end = r["period_start"], r["period_end"]
            period = Period(int(start.timestamp()), int(end.timestamp()))
            trial = in_trial(period, _unix(r["trial_start"]), _unix(r["trial_end"]))
            out.setdefault(r["item"], []).append(
                BillingPeriod(
                    start,
                    end,
                    r["invoiced"],
                    trial,
                    meter=r["event_name"],
                    removed=r["removed"],
                    voided=r["voided"],
                    customer=r["stripe_customer"],
                    customer_deleted=r["customer_deleted"],
                )
            )
        return out


def _unix(at: dt.datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())
