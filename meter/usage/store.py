"""Postgres reads of the usage API (the plan's cache is meter/usage/plans.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import orjson

from meter.billing.errors import NotFound
from meter.billing.prices import PRICE_COLUMNS, price_from_row
from meter.billing.rules import LIVE_STATUSES
from meter.pricing import (
    Discount,
    Period,
    Price,
    PricingError,
    TaxRate,
    coupon_from_stripe,
    tax_rate_from_stripe,
)
from meter.usage import queries
from meter.usage.tally import Tally

T = TypeVar("T")

# A subscription in these states bills nothing more: its customer's current usage is unpriced.
ENDED = ("canceled", "incomplete_expired")


def unix(value: dt.datetime) -> int:
    return int(value.timestamp())


def ts(value: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, dt.UTC)


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One subscription item. `price` is None when its price was not synced or cannot be
    evaluated (`price_error` says why): the item's usage is still reported, unpriced."""

    id: str
    price_id: str
    price: Price | None
    price_error: str | None
    quantity: int | None
    meter: str | None
    aggregation: str
    current: Period
    removed: bool
    # The item's own tax rates; empty means the subscription's defaults apply.
    tax_rates: tuple[TaxRate, ...] = ()
    # Its usage is held back by the reporter: its Stripe meter is not `sendable` (inactive, or
    # counts events; migrations/0015_lifecycle.sql), so Stripe has not got it.
    held: bool = False
    # Where in `current` the item's price started billing usage (added or repriced mid-period).
    since: int | None = None

    @property
    def metered(self) -> bool:
        return self.price.metered if self.price is not None else self.meter is not None

    @property
    def billing(self) -> Period:
        """The part of the current period whose usage the item's price bills."""
        since = self.current.start if self.since is None else self.since
        return Period(max(self.current.start, min(since, self.current.end - 1)), self.current.end)


@dataclass(frozen=True, slots=True)
class PendingItem:
    """An invoice item the subscription's next invoice will bill (a proration, or a flexible
    billing mode's usage of a price taken off an item): its amount is fixed."""

    id: str
    item_id: str | None
    amount: int
    currency: str
    proration: bool
    period: Period | None


@dataclass(frozen=True, slots=True)
class Plan:
    external_id: str
    stripe_id: str
    subscription: str | None
    status: str | None
    items: tuple[PlanItem, ...]
    # The subscription's discounts, in Stripe's order (see migrations/0006_adjustments.sql).
    discounts: tuple[Discount, ...] = ()
    # The subscription's default tax rates (an item's own replace them on its lines).
    tax_rates: tuple[TaxRate, ...] = ()
    # The customer's other live subscriptions (same customer fields, no `others` of their own):
    # Stripe bills a meter's usage on every subscription with a price on that meter.
    others: tuple[Plan, ...] = ()
    # The subscription's trial, cancellation and paused collection (meter/pricing/lifecycle.py).
    trial_start: int | None = None
    trial_end: int | None = None
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    pause_behavior: str | None = None  # pause_collection.behavior
    pause_resumes_at: int | None = None  # pause_collection.resumes_at
    # When an ended subscription ended (unix s): its last period ends there.
    ended_at: int | None = None
    billing_mode: str = "classic"
    pending: tuple[PendingItem, ...] = ()

    @property
    def keys(self) -> list[str]:
        """How events may name the customer: our id or Stripe's."""
        return sorted({self.external_id, self.stripe_id})


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _price(row: asyncpg.Record) -> tuple[Price | None, str | None]:
    if row["currency"] is None:
        return None, "price not synced"
    return _parsed_price(tuple(row[c] for c in PRICE_COLUMNS))


# Optimisation: many customers share a few prices, and parsing was a large part of a plan
# load's CPU (docs/performance.md). Keyed by every column the parse reads,
# so a changed price is a new key; Prices are immutable, so customers can share one. (jsonb
# arrives as text: asyncpg decodes no JSON here, so every value is hashable.)
@functools.lru_cache(maxsize=4096)
def _parsed_price(values: tuple[Any, ...]) -> tuple[Price | None, str | None]:
    try:
        return price_from_row(dict(zip(PRICE_COLUMNS, values, strict=True))), None
    except (PricingError, ValueError, KeyError) as exc:
        return None, f"price cannot be evaluated: {exc}"


def _evaluable(raw: Any, parse: Callable[[Any], T]) -> tuple[T, ...]:
    """Stored discounts or tax rates (a jsonb list) as the pricing engine's; one it cannot
    evaluate is left out of the invoice rather than failing the whole response."""
    out = []
    for obj in _json(raw) or []:
        try:
            out.append(parse(obj))
        except (PricingError, ValueError, KeyError, TypeError):
            continue
    return tuple(out)


def _discount(stored: Any) -> Discount:
    return Discount(
        coupon_from_stripe(stored["coupon"]), int(stored.get("start") or 0), stored.get("end")
    )


def _item(row: asyncpg.Record) -> PlanItem:
    price, error = _price(row)
    return PlanItem(
        id=row["id"],
        price_id=row["price"],
        price=price,
        price_error=error,
        quantity=row["quantity"],
        meter=row["event_name"],
        aggregation=row["aggregation"],
        current=Period(unix(row["current_period_start"]), unix(row["current_period_end"])),
        removed=row["removed_at"] is not None,
        tax_rates=_evaluable(row["tax_rates"], tax_rate_from_stripe),
        held=row["held"],
        since=unix(row["price_since"]),
    )


async def load_plan(conn: asyncpg.Connection, tenant: str, key: str) -> Plan:
    """The customer (by our id or the cus_ id) with its current subscription and its other live
    ones; NotFound if unknown."""
    rows = await conn.fetch(queries.PLAN, tenant, key, sorted(LIVE_STATUSES))
    if not rows:
        raise NotFound(f"no customer {key!r}", param="id")
    by_sub: dict[str | None, list[asyncpg.Record]] = {}
    for row in rows:  # in rank order: the current subscription first
        by_sub.setdefault(row["subscription"], []).append(row)
    pending: dict[str, list[PendingItem]] = {}
    for r in await conn.fetch(queries.PENDING_ITEMS, rows[0]["stripe_id"]):
        pending.setdefault(r["subscription"], []).append(_pending_item(r))
    current, *others = (
        _subscription_plan(group, pending.get(sub or "") or ()) for sub, group in by_sub.items()
    )
    return dataclasses.replace(current, others=tuple(others))


def _pending_item(r: asyncpg.Record) -> PendingItem:
    span = None
    if r["period_start"] is not None and r["period_end"] is not None:
        span = Period(unix(r["period_start"]), unix(r["period_end"]))
    return PendingItem(
        r["id"], r["subscription_item"], r["amount"], r["currency"], r["proration"], span
    )


async def taken_items(
    conn: asyncpg.Connection, subscription: str, period: Period
) -> tuple[PendingItem, ...]:
    """The invoice items that the subscription's invoice for `period` took."""
    rows = await conn.fetch(queries.TAKEN_ITEMS, subscription, ts(period.end))
    return tuple(_pending_item(r) for r in rows)


def _subscription_plan(rows: list[asyncpg.Record], pending: Sequence[PendingItem]) -> Plan:
    first = rows[0]
    has_sub = first["subscription"] is not None
    return Plan(
        billing_mode=first["billing_mode"] or "classic",
        pending=tuple(pending),
        external_id=first["external_id"],
        stripe_id=first["stripe_id"],
        subscription=first["subscription"],
        status=first["status"],
        ended_at=_unix_or_none(first["ended_at"]),
        items=tuple(_item(r) for r in rows if r["id"] is not None),
        discounts=tuple(
            d
            for d in _evaluable(first["discounts"], _discount)
            if not d.used_up(_unix_or_none(first["last_billed_at"]))
        )
        if has_sub
        else (),
        tax_rates=_evaluable(first["subscription_tax_rates"], tax_rate_from_stripe)
        if has_sub
        else (),
        trial_start=_unix_or_none(first["trial_start"]),
        trial_end=_unix_or_none(first["trial_end"]),
        cancel_at_period_end=bool(first["cancel_at_period_end"]),
        cancel_at=_unix_or_none(first["cancel_at"]),
        pause_behavior=first["pause_behavior"],
        pause_resumes_at=_unix_or_none(first["pause_resumes_at"]),
    )


def _unix_or_none(value: dt.datetime | None) -> int | None:
    return None if value is None else unix(value)


async def periods_at(
    conn: asyncpg.Connection, items: Sequence[PlanItem], at: int
) -> dict[str, Period]:
    """Each item's billing period that contains `at` (items without one are absent)."""
    rows = await conn.fetch(queries.ITEM_PERIODS_AT, [i.id for i in items], ts(at))
    found = {r["item"]: Period(unix(r["period_start"]), unix(r["period_end"])) for r in rows}
    for item in items:  # the current period is on the item even before its period row exists
        if item.id not in found and item.current.start <= at < item.current.end:
            found[item.id] = item.current
    return found


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Rollup usage and the stream checkpoints it is consistent with."""

    checkpoints: dict[str, str]
    by_item: dict[tuple[str, str], Tally]  # (item, meter) → buckets folded
    by_meter: dict[str, tuple[str, Tally]]  # meter → (aggregation, buckets folded)
    # Of the keys asked about (pending.keys_to_check), those in usage_event_keys: folded.
    folded: frozenset[bytes] = frozenset()


@dataclass(frozen=True, slots=True)
class ItemUsage:
    """What one usage request asks of the rollups: its customer's items, each in its period."""

    tenant: str
    keys: list[str]  # how events may name the customer (Plan.keys)
    periods: dict[str, Period]  # item → period
    check: tuple[bytes, ...] = ()  # usage_event_keys keys to look up (pending.keys_to_check)
    # For run-rate projections (pricing.trailing_start): each item's meter, and when its usage
    # counts as recent (unix s); none: no recent usage is read (a period that ended).
    meters: dict[str, str] | None = None
    recent_since: int | None = None


async def read_item_usage(
    conn: asyncpg.Connection, streams: list[str], wanted: Sequence[ItemUsage]
) -> list[Snapshot]:
    """Each request's usage per (item, period), all with the stream checkpoints, from ONE
    statement (queries.ITEM_SNAPSHOT), so one snapshot: a stream entry is in this usage if and
    only if its id is at or before its stream's checkpoint here (and its key, if it was asked
    about, is among `folded` if any entry of its event is)."""
    elements = [
        {
            "n": n,
            "t": usage.tenant,
            "c": key,
            "i": item,
            "p": period.start,
            "e": period.end,
            "m": None if usage.meters is None else usage.meters.get(item),
            "w": usage.recent_since,
        }
        for n, usage in enumerate(wanted)
        for key in usage.keys
        for item, period in usage.periods.items()
    ]
    check = [key for usage in wanted for key in usage.check]
    rows = await conn.fetch(queries.ITEM_SNAPSHOT, streams, orjson.dumps(elements).decode(), check)
    checkpoints: dict[str, str] = {}
    folded: set[bytes] = set()
    by_item: list[dict[tuple[str, str], Tally]] = [{} for _ in wanted]
    for row in rows:
        if row["folded"] is not None:
            folded.add(row["folded"])
        elif row["request"] is None:
            checkpoints[row["stream"]] = row["last_id"]
        else:
            tally = by_item[row["request"]].setdefault((row["item"], row["meter"]), Tally())
            if row["recent_count"] is not None:
                tally.add_recent(row)
            elif row["carried"] is None:
                tally.add_rollups(row)
            else:
                tally.add_carried(row["carried"])
    # The checkpoints are shared: nothing changes a Snapshot's dicts but its own request's fold.
    seen = frozenset(folded)  # keys name their tenant: one set serves every request
    return [Snapshot(checkpoints, tallies, {}, seen) for tallies in by_item]


async def read_meter_usage(
    conn: asyncpg.Connection,
    tenant: str,
    keys: list[str],
    streams: list[str],
    window: Period,
    check: Sequence[bytes] = (),
) -> Snapshot:
    """A customer without subscription: its usage per meter over `window`, with the stream
    checkpoints and the keys of `check` already folded it is consistent with (one
    repeatable-read snapshot)."""
    by_meter: dict[str, tuple[str, Tally]] = {}
    folded: frozenset[bytes] = frozenset()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(queries.CHECKPOINTS, streams)
        if check:
            found = await conn.fetch(queries.FOLDED_KEYS, list(check))
            folded = frozenset(bytes(r["key"]) for r in found)
        args = (tenant, keys, ts(window.start), ts(window.end))
        for row in await conn.fetch(queries.USAGE_BY_METER, *args):
            tally = Tally()
            tally.add_rollups(row)
            by_meter[row["meter"]] = (row["aggregation"], tally)
    return Snapshot({r["stream"]: r["last_id"] for r in rows}, {}, by_meter, folded)


async def aggregations(conn: asyncpg.Connection, tenant: str) -> dict[str, str]:
    return {r["meter"]: r["aggregation"] for r in await conn.fetch(queries.AGGREGATIONS_OF, tenant)}
