"""The interfaces between the aggregator, the reporter and billing. Each side names what it
needs here; a process's wiring (meter/wiring.py) chooses the implementation, so none of the three
imports another.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from meter.core.windows import Window

# A connection, or one borrowed from a pool.
Conn = asyncpg.Connection | PoolConnectionProxy


@dataclass(frozen=True, slots=True)
class ItemPeriod:
    """A subscription item that bills `meter` for `customer` during `period`."""

    customer: str
    meter: str
    item: str
    period: Window


class Attributor(Protocol):
    """The aggregator's need: billing periods, looked up inside the caller's transaction."""

    async def item_periods(
        self, conn: asyncpg.Connection, tenant: str, customers: Collection[str]
    ) -> Sequence[ItemPeriod]:
        """Every known (item, period) of these customers of `tenant`."""
        ...


class CustomerDirectory(Protocol):
    """The reporter's need: our event customers as Stripe customer ids, inside the caller's
    transaction."""

    async def stripe_customer_ids(
        self, conn: Conn, tenant: str, customers: Collection[str]
    ) -> Mapping[str, str]:
        """The Stripe id of each customer that has one; the others are left out (they wait)."""
        ...


class UsageUpkeep(Protocol):
    """Billing's need: the aggregator's work on usage already folded when billing data changes."""

    async def move_after_cut(
        self,
        conn: asyncpg.Connection,
        tenant: str,
        customers: list[str],
        item: str,
        cut: dt.datetime,
    ) -> int:
        """A period cut short at `cut`: its usage past the cut moves to the new period, in the
        caller's transaction (the one recording the cut). Returns how many old periods gave."""
        ...

    async def reattribute(
        self, conn: asyncpg.Connection, tenant: str, customer: str, since: dt.datetime
    ) -> None:
        """Attach the customer's unattributed usage since `since` to the items now known."""
        ...

    async def sweep(self, conn: asyncpg.Connection, since: dt.datetime) -> None:
        """`reattribute` for every customer with unattributed usage."""
        ...


class SubtractEvent(Protocol):
    """A void's need: one folded event taken out of its bucket and its period's total, in the
    caller's transaction. Returns the bucket's start; None: no such bucket (nothing changed)."""

    async def __call__(
        self,
        conn: Conn,
        tenant: str,
        customer: str,
        meter: str,
        item: str,
        period_start: dt.datetime,
        event_time: dt.datetime,
        value: Decimal,
        dims: str = "",
    ) -> dt.datetime | None: ...
