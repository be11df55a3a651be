"""Seams to billing data: Stripe customer ids and which billing periods are invoiced.

The billing module (meter/billing/) will supply Postgres implementations; until then the
defaults below need nothing but the usage data itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from typing import Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from reporter import queries

# A connection, or one borrowed from a pool.
Conn = asyncpg.Connection | PoolConnectionProxy

# (tenant, customer, subscription item, period start)
PeriodKey = tuple[str, str, str, dt.datetime]


class CustomerDirectory(Protocol):
    """Maps our event customers to Stripe customer ids, inside the caller's transaction."""

    async def stripe_customer_ids(
        self, conn: Conn, tenant: str, customers: Collection[str]
    ) -> Mapping[str, str]:
        """The Stripe id of each customer that has one; the others are left out (they wait)."""
        ...


class PrefixDirectory:
    """An event customer that is a Stripe id (`cus_…`) is its own Stripe customer; any other
    has none yet, and its usage waits (never dropped) until a directory resolves it."""

    async def stripe_customer_ids(
        self, conn: Conn, tenant: str, customers: Collection[str]
    ) -> Mapping[str, str]:
        return {c: c for c in customers if c.startswith("cus_")}


class PeriodCalendar(Protocol):
    """Tells which billing periods already have a finalized invoice."""

    async def closed(
        self, conn: Conn, periods: Collection[PeriodKey], now: dt.datetime
    ) -> set[PeriodKey]:
        """The subset of `periods` whose invoice is finalized."""
        ...


class RollupCalendar:
    """From the rollups alone: a period is invoiced once the item's next period began more than
    `grace` ago (Stripe finalizes a cycle invoice about an hour after the period ends). Without
    usage in the next period it cannot tell, and says open."""

    def __init__(self, grace: dt.timedelta) -> None:
        self.grace = grace

    async def closed(
        self, conn: Conn, periods: Collection[PeriodKey], now: dt.datetime
    ) -> set[PeriodKey]:
        items = sorted({(t, c, i) for t, c, i, _ in periods})
        if not items:
            return set()
        rows = await conn.fetch(
            queries.ITEM_PERIODS,
            [t for t, _, _ in items],
            [c for _, c, _ in items],
            [i for _, _, i in items],
        )
        known = [
            (r["tenant"], r["customer"], r["subscription_item"], r["period_start"]) for r in rows
        ]
        return closed_periods(periods, known, now, self.grace)


def closed_periods(
    periods: Iterable[PeriodKey], known: Iterable[PeriodKey], now: dt.datetime, grace: dt.timedelta
) -> set[PeriodKey]:
    """Pure rule of `RollupCalendar`: closed once a later period of the item began ≤ now − grace."""
    starts: dict[tuple[str, str, str], list[dt.datetime]] = {}
    for t, c, i, start in known:
        starts.setdefault((t, c, i), []).append(start)
    out: set[PeriodKey] = set()
    for key in periods:
        t, c, i, start = key
        if any(start < s <= now - grace for s in starts.get((t, c, i), ())):
            out.add(key)
    return out
