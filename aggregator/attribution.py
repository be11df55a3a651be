"""Attribution of events to subscription items and billing periods.

The billing module owns customers and subscriptions; the aggregator only needs, for a customer
and meter, which subscription item bills it during which period. That need is the small
`Attributor` protocol (meter/core/ports.py). `NullAttributor` attributes nothing (tests that
need no billing use it): every bucket then carries a null item and is re-attributed later (see
aggregator/reattribute.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from meter.core.ports import Attributor as Attributor
from meter.core.ports import ItemPeriod as ItemPeriod
from meter.core.windows import Window


@dataclass(frozen=True, slots=True)
class Attribution:
    """Where an event is billed: an item and the billing period holding the event, or neither."""

    item: str | None = None
    period: Window | None = None

    def __post_init__(self) -> None:
        if (self.item is None) != (self.period is None):
            raise ValueError("an attribution has both an item and a period, or neither")


UNATTRIBUTED = Attribution()

PeriodIndex = Mapping[tuple[str, str], Sequence[ItemPeriod]]


class NullAttributor:
    """No billing data: every event stays unattributed (null item) until re-attribution."""

    async def item_periods(
        self, conn: asyncpg.Connection, tenant: str, customers: Collection[str]
    ) -> Sequence[ItemPeriod]:
        return ()


def index_periods(periods: Iterable[ItemPeriod]) -> dict[tuple[str, str], list[ItemPeriod]]:
    """Group item periods by (customer, meter), latest period first; of periods starting
    together, the one that lasts longer first (an item removed mid-period ends early: its late
    events go to the item still billing), then by item id (deterministic order)."""
    index: dict[tuple[str, str], list[ItemPeriod]] = {}
    for p in periods:
        index.setdefault((p.customer, p.meter), []).append(p)
    for found in index.values():
        found.sort(key=lambda p: (-p.period.start_ms, -p.period.end_ms, p.item))
    return index


def attribute(customer: str, meter: str, ts_ms: int, index: PeriodIndex) -> Attribution:
    """The item and period an event at `ts_ms` is billed under; unattributed if none covers it.

    Where two items cover the instant (a plan change), the one whose period started last wins
    (`index_periods` orders them).
    """
    for p in index.get((customer, meter), ()):
        if p.period.contains(ts_ms):
            return Attribution(p.item, p.period)
    return UNATTRIBUTED


def whole_attribution(customer: str, meter: str, window: Window, index: PeriodIndex) -> Attribution:
    """The one attribution every instant of `window` has, or UNATTRIBUTED if none covers it all or
    it changes inside (a period starts or ends within the window). Attribution can change only
    where a period starts or ends, so checking the window's start and those points suffices."""
    found = attribute(customer, meter, window.start_ms, index)
    if found is UNATTRIBUTED:
        return UNATTRIBUTED
    for p in index.get((customer, meter), ()):
        for edge in (p.period.start_ms, p.period.end_ms):
            inside = window.start_ms < edge < window.end_ms
            if inside and attribute(customer, meter, edge, index) != found:
                return UNATTRIBUTED
    return found
