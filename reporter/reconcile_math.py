"""Reconciliation arithmetic: minute windows, what we sent, drift, horizon verdicts. Pure."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from reporter.plan import whole_second

MINUTE = dt.timedelta(minutes=1)


def floor_minute(ts: dt.datetime) -> dt.datetime:
    return ts.replace(second=0, microsecond=0)


def ceil_minute(ts: dt.datetime) -> dt.datetime:
    floor = floor_minute(ts)
    return floor if floor == ts else floor + MINUTE


@dataclass(frozen=True, slots=True)
class SentRow:
    value: Decimal
    absolute: bool
    event_time: dt.datetime
    id: int


def our_total(rows: Iterable[SentRow]) -> Decimal | None:
    """What Stripe should hold for these rows: the sum of deltas, or for absolute rows the
    value of the latest whole second (Stripe's timestamps are seconds). None: rows of that
    second carry different values, and which one Stripe's `last` keeps is not documented (the
    reporter stamps each version of a period after the previous one, so only rows sent before
    that rule, or of two periods meeting in one second, can do this)."""
    items = list(rows)
    absolute = [r for r in items if r.absolute]
    if absolute:
        latest = max(whole_second(r.event_time) for r in absolute)
        values = {r.value for r in absolute if whole_second(r.event_time) == latest}
        return values.pop() if len(values) == 1 else None
    return sum((r.value for r in items), Decimal(0))


@dataclass(frozen=True, slots=True)
class Drift:
    customer: str
    meter: str
    period_start: dt.datetime
    ours: Decimal
    stripe: Decimal

    @property
    def delta(self) -> Decimal:
        return self.stripe - self.ours


def drifts(results: Iterable[Drift]) -> list[Drift]:
    """The ones whose totals differ, largest difference first."""
    return sorted((d for d in results if d.delta != 0), key=lambda d: (-abs(d.delta), d.customer))


def horizon_verdict(stripe_total: Decimal, sent_total: Decimal, pending: Sequence[Decimal]) -> str:
    """For delta rows unconfirmed past Stripe's dedupe horizon, in one minute window of one
    customer and meter: `applied` if Stripe holds exactly what we sent plus them (mark them
    sent, do not resend), `missing` if exactly what we sent (resend), else `review`."""
    extra = stripe_total - sent_total
    if extra == 0:
        return "missing"
    if extra == sum(pending, Decimal(0)):
        return "applied"
    return "review"
