"""Outbox math: which meter event a grown unit becomes. Pure; the outbox module does the I/O.

A unit is what the reporter tracks a version of:
- delta meters (our sum and count; their Stripe meters use the `sum` formula): each bucket. Stripe
  holds the sum of the deltas sent, so a new version sends `value now − value sent so far`.
- absolute meters (our last, max, unique_count; Stripe `last` formula): each billing period of a
  customer's meter, over every item billing it (a meter event names no item), whose value is the
  aggregate of all their buckets; Stripe's `last` keeps the value with the latest timestamp.
  Which of two events of one second it keeps is not documented, so each version of a period is
  stamped one whole second or more after the previous one (`version_time`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Context, Decimal

from reporter.identifiers import identifier, unit_key
from reporter.periods import BillingPeriod

ABSOLUTE_AGGREGATIONS = frozenset({"last", "max", "unique_count"})
# Stripe takes timestamps from the past 35 days; keep a day of margin for slow sends.
STRIPE_MAX_PAST = dt.timedelta(days=34)
# Stripe's timestamps are whole seconds; a period's end is not in it.
STRIPE_TICK = dt.timedelta(seconds=1)
# How far past our clock a version of an absolute unit may be stamped to come after the previous
# one: Stripe takes timestamps up to 5 minutes ahead; the other 4 are margin for clock skew.
STRIPE_AHEAD_USED = dt.timedelta(minutes=1)
_SIGNIFICANT = Context(prec=15)
# The outbox `last_error` of an absolute version recorded `late` because its period is full.
NO_SECOND_LEFT = "no second left in its period after the previous version: not sent"
# The outbox `last_error` of usage of a closed trial period: Stripe charges none of it (periods.py).
TRIAL_USAGE = "usage of a trial period, closed before it was sent: charged by no invoice"
# The outbox `last_error` of usage of a closed period whose item bills its meter no more (deleted,
# or repriced onto another meter): Stripe bills it on no invoice (periods.bills_no_more).
ITEM_GONE = "its period is closed and its item bills this meter no more: billed by no invoice"
# The outbox `last_error` of usage of an item whose Stripe customer was deleted (periods.py).
CUSTOMER_DELETED_USAGE = "usage of a deleted Stripe customer's subscription: charged by no invoice"
# The outbox `last_error` of usage of a period whose invoice was voided (periods.py).
VOIDED_USAGE = "usage of a period whose invoice was voided: charged by no invoice"


@dataclass(frozen=True, slots=True)
class Unit:
    """A bucket (delta meters) or a billing period (absolute meters) as it stands now."""

    tenant: str
    customer: str
    meter: str
    item: str
    unit: str  # "bucket" | "period"
    unit_start: dt.datetime
    period_start: dt.datetime
    version: int
    value: Decimal
    absolute: bool
    # A timestamp inside the bucket (delta) or the period's latest event time (absolute).
    timestamp: dt.datetime
    # A bucket's combination of dimension values ('' for none; docs/dimensions.md).
    dims: str = ""
    # The Stripe event name it is reported to: the meter's own, or a price mapping's for a
    # combination priced on its own (meter/dimensions.py route).
    event_name: str = ""
    # An absolute unit's: every item with usage on the customer's meter, whose windows the build
    # checks for overlaps (outbox.py).
    meter_items: tuple[str, ...] = ()

    @property
    def mark_item(self) -> str:
        """The item of the unit's mark and key: '' for an absolute unit, the customer's over
        every item on its meter (one Stripe `last` value per customer and meter)."""
        return "" if self.absolute else self.item

    @property
    def stripe_event(self) -> str:
        return self.event_name or self.meter

    @property
    def key(self) -> str:
        start_ms = int(self.unit_start.timestamp() * 1000)
        return unit_key(
            self.tenant, self.customer, self.meter, self.mark_item, self.unit, start_ms, self.dims
        )


@dataclass(frozen=True, slots=True)
class Mark:
    """What the outbox already accounts for: a version and the cumulative value in Stripe; for
    an absolute unit also the whole second its latest row is stamped with (None: no row yet)."""

    version: int
    value: Decimal
    event_time: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Planned:
    """The new mark, and the outbox row to write with it (None: nothing to send).

    status `deferred`: no row and the mark stays, the build plans the unit again later."""

    mark: Mark
    identifier: str | None = None
    value: Decimal = Decimal(0)
    event_time: dt.datetime | None = None
    carried_from: dt.datetime | None = None
    status: str = "pending"
    note: str | None = None  # why a row is not sent (outbox `last_error`)


def stripe_value(value: Decimal) -> Decimal:
    """Rounded to Stripe's 15 significant digits; the rounding is carried into the next delta."""
    return _SIGNIFICANT.plus(value)


def wire_value(value: Decimal) -> str:
    """The payload text of a value: plain notation, no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def plan(
    unit: Unit,
    mark: Mark | None,
    *,
    closed: bool,
    target: BillingPeriod | None,
    now: dt.datetime,
    period_end: dt.datetime | None = None,
    trial: bool = False,
    gone: bool = False,
    voided: bool = False,
    customer_deleted: bool = False,
) -> Planned | None:
    """The outbox row for a unit whose version grew past `mark` (None: nothing new).

    `closed`: the unit's billing period may have a finalized invoice (periods.is_closed). Delta
    usage is then carried into `target`, the item's open period (a timestamp inside it, original
    time kept in `carried_from`), or, with no open period known yet, written with status
    `waiting` until the build finds one. An absolute value cannot be carried (it would overwrite
    the current period's), so it is recorded with status `late` and not sent. None of these is
    ever dropped silently. Usage of a closed trial period (`trial`) is recorded `late` with the
    note `TRIAL_USAGE`: Stripe charges no usage of a trial, so carrying it would bill it. Likewise
    usage of a period whose invoice was voided (`voided`, note `VOIDED_USAGE`): the period was
    given for free. Delta usage of a closed period whose item bills its meter no more (`gone`:
    deleted, or its price is on another meter now) is recorded `late` with the note `ITEM_GONE`:
    no period will ever take it, and Stripe bills it on no invoice. Usage of an item whose Stripe
    customer was deleted (`customer_deleted`) is recorded `late` (note `CUSTOMER_DELETED_USAGE`),
    open period or not: no invoice will bill it.

    An absolute row of an open period is stamped after the unit's previous row (`version_time`,
    within `period_end`, the unit's period end if known). When no later second is available
    yet it is `deferred`; when none is left in the period it is recorded `late` with a `note`.
    """
    if mark is not None and unit.version <= mark.version:
        return None
    sent_so_far = mark.value if mark is not None else Decimal(0)
    previous = mark.event_time if mark is not None else None
    if unit.absolute:
        value = stripe_value(unit.value)
        if value == sent_so_far:
            return Planned(Mark(unit.version, sent_so_far, previous))
        new_mark = Mark(unit.version, value, previous)
    else:
        value = stripe_value(unit.value - sent_so_far)
        if value == 0:
            return Planned(Mark(unit.version, sent_so_far))
        new_mark = Mark(unit.version, sent_so_far + value)
    ident = identifier(unit.key, unit.version)
    if customer_deleted:
        return Planned(new_mark, ident, value, unit.timestamp, None, "late", CUSTOMER_DELETED_USAGE)
    if closed:
        if trial:
            return Planned(new_mark, ident, value, unit.timestamp, None, "late", TRIAL_USAGE)
        if voided:
            return Planned(new_mark, ident, value, unit.timestamp, None, "late", VOIDED_USAGE)
        if unit.absolute:
            return Planned(new_mark, ident, value, unit.timestamp, None, "late")
        if target is None and gone:
            return Planned(new_mark, ident, value, unit.timestamp, None, "late", ITEM_GONE)
        if target is None:
            return Planned(new_mark, ident, value, unit.timestamp, None, "waiting")
        return Planned(new_mark, ident, value, carried_time(target, now), unit.timestamp)
    wanted = event_time(unit.timestamp, unit.period_start, now)
    if not unit.absolute:
        return Planned(new_mark, ident, value, wanted)
    at = version_time(
        wanted, previous, period_start=unit.period_start, period_end=period_end, now=now
    )
    if at is not None:
        return Planned(Mark(unit.version, value, at), ident, value, at)
    if period_end is not None and no_second_left(previous, period_end):
        return Planned(new_mark, ident, value, previous, None, "late", NO_SECOND_LEFT)
    return Planned(mark or Mark(0, Decimal(0)), status="deferred")


def event_time(timestamp: dt.datetime, period_start: dt.datetime, now: dt.datetime) -> dt.datetime:
    """The timestamp to send: the unit's own, moved inside Stripe's accepted window (≤ 35 days
    past, not in the future). The period is still open, so the moved time stays inside it; a
    period that starts after our clock (a customer on a Stripe test clock ahead of it, whose
    window Stripe takes from the clock) keeps its start."""
    return max(min(max(timestamp, now - STRIPE_MAX_PAST), now), period_start)


def whole_second(at: dt.datetime) -> dt.datetime:
    """The whole second `at` lies in, as Stripe keeps it (transport.unix_seconds floors too)."""
    return at.replace(microsecond=0)


def last_second(end: dt.datetime) -> dt.datetime:
    """The last whole second before `end` (a period's end is not in it)."""
    return whole_second(end - dt.timedelta(microseconds=1))


def version_time(
    wanted: dt.datetime,
    previous: dt.datetime | None,
    *,
    period_start: dt.datetime,
    period_end: dt.datetime | None,
    now: dt.datetime,
) -> dt.datetime | None:
    """The whole second to stamp a new version of an absolute unit with: `wanted`'s (see
    `event_time`), or the one after `previous` (the unit's latest row) if that is later, so
    Stripe's `last` keeps the newest version whatever it does with ties and arrival order.
    At most `STRIPE_AHEAD_USED` past our clock (or the period's start, for a period ahead of
    it) and inside the period. None: no such second now (defer; `no_second_left` tells
    whether one can still come)."""
    at = whole_second(wanted)
    if previous is not None:
        at = max(at, whole_second(previous) + STRIPE_TICK)
    latest = whole_second(max(now, period_start) + STRIPE_AHEAD_USED)
    if period_end is not None:
        latest = min(latest, last_second(period_end))
    return at if at <= latest else None


def no_second_left(previous: dt.datetime | None, period_end: dt.datetime) -> bool:
    """The unit's latest row holds its period's last second: no later version can follow."""
    return previous is not None and whole_second(previous) >= last_second(period_end)


def carried_time(target: BillingPeriod, now: dt.datetime) -> dt.datetime:
    """The timestamp of usage carried into `target`: its start, so that it is billed by that
    period's invoice also for a customer on a test clock (whose periods lie in the clock's time),
    moved inside Stripe's 35-day window when the period is older (a yearly one). The start is
    the same on every re-check while `target` stays open, so a row moved again after a crash
    keeps the timestamp Stripe may already hold."""
    return min(max(target.start, now - STRIPE_MAX_PAST), target.end - STRIPE_TICK)
