"""`GET /v1/customers/{id}/usage` and `GET /v1/customers/{id}/usage/history` (API-key auth).

Order of a usage request, and why the numbers are consistent:
  1. authenticate; load the plan (customer, subscription, items, prices; cached until a billing
     write names it, see plans.py) — no usage is read yet, so nothing about money can be stale
     here but a billing change whose notification is still on its way (milliseconds).
  2. pick the billing period of each item (`period=current|previous|<instant>`).
  3. read the streams' pending entries of this customer (Redis) — before step 4, see pending.py.
  4. read the running totals, the usage the reporter carried between periods, and the stream
     checkpoints in one snapshot (Postgres): one statement for all the requests waiting at that
     moment (routes.py, meter/coalescing.py).
  5. fold the entries after their checkpoint into the rollup totals and price everything.
Steps 3 and 4 are each shared by the requests waiting for them, and no request holds a pooled
connection while it waits: a request that did kept it from the others, and asyncio hands a
freed connection to whoever asks next, not to who waited longest (coalescing.py says more).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from meter import appkeys, jsonwire
from meter.auth import authenticate
from meter.billing.errors import NotFound
from meter.connections import REDIS_ERRORS, acquire
from meter.dimensions import PriceMapping, Versions, combination, index_versions, route
from meter.pricing import (
    Period,
    PricingError,
    add_months,
    project_invoice,
    trailing_start,
)
from meter.usage import groups, params, pending, queries, report, store
from meter.usage.store import Plan, PlanItem
from meter.usage.tally import Tally

log = logging.getLogger(__name__)
# Redis unreachable (standalone or cluster): the usage is answered without pending events.
PENDING_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, OSError)

Doc = dict[str, Any]
# How the helpers below get a connection when they need one: a pooled one for the handler (none
# held while it waits on shared reads), the caller's own for `invoice_so_far`.
Connect = Callable[[], contextlib.AbstractAsyncContextManager[asyncpg.Connection]]


@contextlib.asynccontextmanager
async def _connection(app: web.Application) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection, typed as one (the pool's proxy forwards everything)."""
    async with acquire(app[appkeys.PG]) as conn:
        yield conn


def month_of(at: int) -> Period:
    """The UTC calendar month holding `at`: the period of a customer without subscription."""
    day = dt.datetime.fromtimestamp(at, dt.UTC)
    start = int(day.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp())
    return Period(start, add_months(start, 1))


def _current(plan: Plan, now: int) -> list[tuple[PlanItem, Period]]:
    """Each live item with the part of its current period its price bills (a canceled
    subscription's: what its final invoice bills)."""
    if plan.subscription is None:
        return []
    if plan.status in store.ENDED:
        return _final(plan, now)
    return [(i, i.billing) for i in plan.items if not i.removed]


def _final(plan: Plan, now: int) -> list[tuple[PlanItem, Period]]:
    """The metered items of a subscription canceled inside its period, over [period start, end
    of the subscription): what its final invoice bills (the cancel's `invoice_now`; licensed
    fees were billed in advance). Shown until the period would have ended; then the customer
    has no current period."""
    ended = plan.ended_at
    if ended is None:
        return []
    return [
        (i, Period(i.billing.start, ended))
        for i in plan.items
        if not i.removed
        and i.metered
        and i.billing.start < ended <= i.current.end
        and now < i.current.end
    ]


async def _selection(
    conn: asyncpg.Connection, plan: Plan, wanted: str | int, now: int
) -> list[tuple[PlanItem, Period]]:
    """Each item with its period for the requested period; [] means "bill nothing" (no
    subscription, or one that ended, asked for the current period)."""
    if wanted == params.CURRENT:
        return _current(plan, now)
    if plan.subscription is None:
        return []
    live = [i for i in plan.items if not i.removed]
    if wanted == params.PREVIOUS:
        anchor = min((i.current.start for i in live or plan.items), default=now)
        at = anchor - 1
    else:
        assert isinstance(wanted, int)
        at = wanted
    periods = await store.periods_at(conn, plan.items, at)
    if not periods:
        raise NotFound(
            f"no billing period of customer {plan.external_id!r} holds {at}", param="period"
        )
    return [(i, periods[i.id]) for i in plan.items if i.id in periods]


Selection = list[tuple[PlanItem, Period]]


async def _plan_and_selection(
    app: web.Application, tenant: str, key: str, wanted: str | int, now: int
) -> tuple[Plan, Selection, list[tuple[Plan, Selection]]]:
    """The plan, its current subscription's selection, and each other live subscription with
    its own (those without a period for the request are left out)."""
    plans = app[appkeys.USAGE_PLANS]
    plan = plans.cached(tenant, key)
    if plan is not None and wanted == params.CURRENT:
        # The common case needs no connection.
        others = [(o, _current(o, now)) for o in plan.others]
        return plan, _current(plan, now), [(o, sel) for o, sel in others if sel]
    async with _connection(app) as conn:
        if plan is None:
            plan = await plans.plan(conn, tenant, key)
        selection = await _selection(conn, plan, wanted, now)
        others = []
        for other in plan.others:
            with contextlib.suppress(NotFound):
                if found := await _selection(conn, other, wanted, now):
                    others.append((other, found))
        if wanted != params.CURRENT:
            # A past period's invoice: the invoice items it took, not the pending ones.
            plan = await _taken(conn, plan, selection)
            others = [(await _taken(conn, o, sel), sel) for o, sel in others]
        return plan, selection, others


async def _taken(conn: asyncpg.Connection, plan: Plan, selection: Selection) -> Plan:
    """The plan with, as its invoice items, those the invoice of `selection`'s period took."""
    metered = [(i, p) for i, p in selection if i.metered] or selection
    if plan.subscription is None or not metered:
        return dataclasses.replace(plan, pending=())
    period = report.invoice_period(*metered[0])
    taken = await store.taken_items(conn, plan.subscription, period)
    return dataclasses.replace(plan, pending=taken)


def _window(wanted: str | int, now: int) -> Period:
    if wanted == params.CURRENT:
        return month_of(now)
    if wanted == params.PREVIOUS:
        return month_of(month_of(now).start - 1)
    assert isinstance(wanted, int)
    return month_of(wanted)


async def usage(request: web.Request) -> web.Response:
    """Usage so far, amounts, run-rate projection and projected invoice of one billing period."""
    tenant = await authenticate(request)
    app = request.app
    reads = app[appkeys.USAGE_PENDING]
    wanted = params.period(request.query)
    breakdown = params.breakdown(request.query)
    now = int(time.time())
    # No connection is held from here on while waiting for a shared read: a request holding
    # one would keep it from the others (and from the batch they wait for).
    plan, selection, others = await _plan_and_selection(
        app, tenant, request.match_info["id"], wanted, now
    )
    window = None if selection else _window(wanted, now)
    # The trailing window of the run-rate projections; a past period has nothing left to project.
    recent_since = trailing_start(now) if wanted == params.CURRENT else None
    freshness: Doc = {"as_of": int(time.time()), "pending_scan_limit": pending.MAX_PENDING_SCAN}
    try:
        read: pending.PendingRead | None = await reads.read(tenant, plan.keys)
    except PENDING_ERRORS as exc:
        log.warning("usage: pending events unavailable", extra={"error": str(exc)})
        read = None
    # The Postgres snapshot only now, after the pending read returned (pending.py says why).
    defined: dict[str, str] = {}
    gone = _removed(plan, [o for o, _ in others], now) if wanted == params.CURRENT else []
    if window is None:
        # Only an item with a meter has usage (the others' lines are priced on quantity).
        periods = {
            i.id: p
            for i, p in selection + [pair for _, sel in others for pair in sel] + gone
            if i.meter is not None
        }
        # Only a sum or count meter's projection measures a rate (report.py, Tally.recent).
        item_meters = {
            i.id: i.meter
            for i, _ in selection + [pair for _, sel in others for pair in sel] + gone
            if i.meter is not None and i.aggregation in ("sum", "count")
        }
        asked = store.ItemUsage(
            tenant, plan.keys, periods, pending.keys_to_check(read), item_meters, recent_since
        )
        snap = await app[appkeys.USAGE_SNAPSHOTS](asked)
        events = (
            [] if read is None else pending.after_checkpoints(read, snap.checkpoints, snap.folded)
        )
    else:
        check = pending.keys_to_check(read)
        async with _connection(app) as conn:
            snap = await store.read_meter_usage(conn, tenant, plan.keys, reads.names, window, check)
            events = (
                []
                if read is None
                else pending.after_checkpoints(read, snap.checkpoints, snap.folded)
            )
            if any(e.meter not in snap.by_meter for e in events):
                defined = await store.aggregations(conn, tenant)
    freshness |= {
        "pending_included": read is not None and not read.truncated,
        "pending_scanned": 0 if read is None else read.scanned,
        "pending_truncated": read is not None and read.truncated,
        "pending_events": len(events),
        # Whether a pending value is new to the period is known only once aggregated.
        "unique_count_pending": "excluded",
    }
    doc: Doc = {
        "object": "usage",
        "customer": plan.external_id,
        "stripe_customer": plan.stripe_id,
        "subscription": plan.subscription,
        "status": plan.status,
        "requested_period": wanted,
    }
    rest: list[dict[tuple[str, str], Tally]] = []  # the other subscriptions' tallies
    if window is not None:
        meters = snap.by_meter
        for event in events:
            if report.in_period(event, window):
                aggregation = meters.get(event.meter, (defined.get(event.meter, "sum"), None))[0]
                meters.setdefault(event.meter, (aggregation, Tally()))[1].add_event(event)
        doc |= _unpriced(window, meters)
    else:
        connect = functools.partial(_connection, app)
        priced = await _priced_dimensions(app, tenant)
        if priced.mappings:
            await _split_mapped(
                connect, tenant, plan, selection, snap.by_item, priced, recent_since
            )
            counting = frozenset(
                i.meter for i, _ in selection if i.meter and i.aggregation == "count"
            )
            events = [priced.routed(e, counting) for e in events]
        selections = [selection] + [sel for _, sel in others]
        sources: list[dict[tuple[str, str], list[tuple[str, int]]]] = []
        main, *rest = _every_event_on_each(selections, snap.by_item, gone, sources)
        await _distinct_unions(connect, tenant, plan.keys, selections, [main, *rest], sources)
        doc |= _priced(selection, main, events, now, plan, recent_since)
        if breakdown:
            await _add_groups(app, tenant, plan, selection, main, doc["items"], events, breakdown)
        doc["billing_mode"] = plan.billing_mode
        if plan.status in store.ENDED:
            doc["final_invoice"] = True
    # Every other live subscription bills the same usage again (Stripe bills a meter event on
    # each subscription with a price on its meter): each is shown, priced, as its own invoice.
    doc["other_subscriptions"] = [
        {
            "subscription": other.subscription,
            "status": other.status,
            "billing_mode": other.billing_mode,
        }
        | _priced(sel, tallies, events, now, other, recent_since)
        for (other, sel), tallies in zip(others, rest, strict=False)
    ]
    doc["freshness"] = freshness
    return jsonwire.response(doc)


async def _add_groups(
    app: web.Application,
    tenant: str,
    plan: Plan,
    selection: Selection,
    tallies: dict[tuple[str, str], Tally],
    items: list[Doc],
    events: list[Any],
    b: params.Breakdown,
) -> None:
    """Each metered item's usage per combination of dimension values (`group_by`, `filter`):
    its buckets of the item's period and its pending events; the item's own numbers stay."""
    async with _connection(app) as conn:
        versions = index_versions(
            [
                (r["tenant"], r["meter"], r["effective_from"], r["keys"])
                for r in await conn.fetch(queries.DIMENSION_VERSIONS, tenant)
            ]
        )
        for (item, period), entry in zip(selection, items, strict=True):
            if item.meter is None or not item.metered:
                continue
            rows = await conn.fetch(
                queries.GROUPS_IN_WINDOW,
                tenant,
                plan.keys,
                item.meter,
                store.ts(period.start),
                store.ts(period.end),
                *[*b.group_by, None, None, None][:3],
                [k for k, _ in b.filters],
                [v for _, v in b.filters],
            )
            mine = [e for e in events if e.meter == item.meter and report.in_period(e, period)]
            found = groups.tallies(rows, mine, versions, b)
            tally = tallies.get((item.id, item.meter))
            whole = tally.quantity(item.aggregation) if tally is not None else Decimal(0)
            amount = entry.get("amount")
            entry["groups"] = groups.group_docs(
                found, b, item.aggregation, whole, amount if isinstance(amount, int) else None
            )


@dataclasses.dataclass(frozen=True, slots=True)
class PricedDimensions:
    """A tenant's price mappings and dimension versions (docs/dimensions.md)."""

    mappings: dict[str, list[PriceMapping]]
    versions: dict[tuple[str, str], Versions]

    def routed(self, event: Any, counting: frozenset[str]) -> Any:
        """A pending event as the item of its combination's price bills it: under the event
        name it is reported to (the guard is not applied to pending events); of a meter in
        `counting` (aggregation count), worth 1 there, as the reporter sends its count."""
        maps = self.mappings.get(event.meter)
        if not maps:
            return event
        v = self.versions.get((event.tenant, event.meter))
        keys = v.at(event.timestamp_ms) if v is not None else ()
        name = route(combination(event.properties, keys), event.meter, maps)
        if name == event.meter:
            return event
        return event._replace(meter=name, value=1 if event.meter in counting else event.value)


# Mappings change rarely: each process reads a tenant's at most every few seconds, so a usage
# request pays no extra query in the common case; a projection may lag a new mapping that long.
_PRICED_TTL_S = 5.0


async def _priced_dimensions(app: web.Application, tenant: str) -> PricedDimensions:
    cache: dict[str, tuple[float, PricedDimensions]] = app[appkeys.USAGE_PRICED]
    cached = cache.get(tenant)
    if cached is not None and time.monotonic() - cached[0] < _PRICED_TTL_S:
        return cached[1]
    async with _connection(app) as conn:
        found = await read_priced_dimensions(conn, tenant)
    cache[tenant] = (time.monotonic(), found)
    return found


async def read_priced_dimensions(conn: asyncpg.Connection, tenant: str) -> PricedDimensions:
    mappings: dict[str, list[PriceMapping]] = {}
    for r in await conn.fetch(queries.PRICE_MAPPINGS, tenant):
        pairs = tuple(sorted(orjson.loads(r["filter"]).items()))
        mappings.setdefault(r["meter"], []).append(PriceMapping(pairs, r["event_name"]))
    versions = {}
    if mappings:
        rows = await conn.fetch(queries.DIMENSION_VERSIONS, tenant)
        versions = index_versions(
            [(r["tenant"], r["meter"], r["effective_from"], r["keys"]) for r in rows]
        )
    return PricedDimensions(mappings, versions)


async def _split_mapped(
    connect: Connect,
    tenant: str,
    plan: Plan,
    selection: Selection,
    by_item: dict[tuple[str, str], Tally],
    priced: PricedDimensions,
    recent_since: int | None,
) -> None:
    """Share a mapped meter's usage between its own item and the items of the mapped prices
    (their Stripe meters' event names), by combination, as the reporter sends it: each item's
    tally becomes the usage of its event name, usage the reporter carried included (each row
    carried under the event name it is sent to), a count meter's as counts. Sum and count
    meters only, like the mappings themselves."""
    by_meter = {item.meter: (item, period) for item, period in selection if item.meter}
    async with connect() as conn:
        for meter, maps in priced.mappings.items():
            own = by_meter.get(meter)
            if own is None or own[0].aggregation not in ("sum", "count"):
                continue
            item, period = own
            rows = await conn.fetch(
                queries.BY_COMBINATION_IN_WINDOW,
                tenant,
                plan.keys,
                meter,
                store.ts(period.start),
                store.ts(period.end),
                store.ts(period.end if recent_since is None else recent_since),
            )
            parts: dict[str, Tally] = {}
            for r in rows:
                part = parts.setdefault(route(r["dims"], meter, maps), Tally())
                part.add_rollups(r)
                part.add_recent(r)
            carried = await conn.fetch(
                queries.CARRIED_BY_EVENT_NAME,
                tenant,
                plan.keys,
                item.id,
                store.ts(period.start),
                store.ts(period.end),
            )
            for r in carried:
                parts.setdefault(r["event_name"], Tally()).add_carried(r["carried"])
            by_item[(item.id, meter)] = parts.pop(meter, Tally())
            for name, tally in parts.items():
                target = by_meter.get(name)
                if target is not None:
                    counted = tally.as_counts() if item.aggregation == "count" else tally
                    by_item[(target[0].id, name)] = counted


def _removed(plan: Plan, others: Sequence[Plan], now: int) -> Selection:
    """The metered items removed from the live subscriptions in their current period, each with
    the part of it its price billed: the aggregator may have attributed to them events that the
    items still on their meter bill too."""
    return [
        (i, i.billing)
        for p in (plan, *others)
        if p.subscription is not None and p.status not in store.ENDED
        for i in p.items
        if i.removed and i.meter is not None and i.current.end > now
    ]


def _every_event_on_each(
    selections: list[Selection],
    by_item: dict[tuple[str, str], Tally],
    gone: Sequence[tuple[PlanItem, Period]] = (),
    sources: list[dict[tuple[str, str], list[tuple[str, int]]]] | None = None,
) -> list[dict[tuple[str, str], Tally]]:
    """Per selection, its items' tallies as Stripe bills them: a meter event is billed on every
    item with a price on its meter whose window holds it (items of one subscription or of
    several), while the aggregator attributes it to one of them, the one whose period started
    last (aggregator/attribution.py). So the events of an item's window are those attributed
    to it and to every item on its meter whose period starts at or after its own: each item's
    tally is the fold of theirs, whatever item the aggregator picked. Pending events are folded
    afterwards, per item and period (report.fold_pending). `gone` are items no longer billing
    (removed): their events count on the others, they get no tally of their own. `sources`, if
    given, receives per selection the (item, period start) sets each tally folds, for
    `_distinct_unions` (a merge sums distinct counts)."""
    on_meter: dict[str, dict[tuple[str, int], tuple[Period, Tally]]] = {}
    for selection in [*selections, list(gone)]:
        for item, period in selection:
            tally = by_item.get((item.id, item.meter or ""))
            if item.meter is not None and tally is not None:
                # An item in two selections (none is) would be folded once.
                on_meter.setdefault(item.meter, {})[(item.id, period.start)] = (period, tally)
    out: list[dict[tuple[str, str], Tally]] = []
    for selection in selections:
        tallies: dict[tuple[str, str], Tally] = {}
        merged: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for item, period in selection:
            if item.meter is None or item.meter not in on_meter:
                continue
            fold = Tally()
            for key, (other, tally) in on_meter[item.meter].items():
                if period.start <= other.start < period.end:
                    fold.merge(tally)
                    merged.setdefault((item.id, item.meter), []).append(key)
            tallies[(item.id, item.meter)] = fold
        out.append(tallies)
        if sources is not None:
            sources.append(merged)
    return out


async def _distinct_unions(
    connect: Connect,
    tenant: str,
    keys: list[str],
    selections: list[Selection],
    tallies: list[dict[tuple[str, str], Tally]],
    sources: list[dict[tuple[str, str], list[tuple[str, int]]]],
) -> None:
    """A unique_count line folding several items' sets counts the distinct values of their
    union: Stripe bills the customer's one value (the reporter sends the union), while merged
    tallies add the sets' counts, counting a value seen by two items twice. Read after the
    snapshot: distinct values only grow, and pending ones are left out anyway."""
    wanted = [
        (n, item, sources[n][(item.id, item.meter)])
        for n, selection in enumerate(selections)
        for item, _ in selection
        if item.aggregation == "unique_count"
        and item.meter is not None
        and len(sources[n].get((item.id, item.meter), [])) > 1
    ]
    if not wanted:
        return
    async with connect() as conn:
        for n, item, sets in wanted:
            count = await conn.fetchval(
                queries.UNION_DISTINCT,
                tenant,
                keys,
                item.meter,
                [i for i, _ in sets],
                [p for _, p in sets],
            )
            tallies[n][(item.id, item.meter or "")].unique = int(count)


def _unpriced(window: Period, meters: dict[str, tuple[str, Tally]]) -> Doc:
    return {
        "period": report.period_doc(window),
        "period_basis": "calendar_month_utc",
        "items": [
            {
                "subscription_item": None,
                "price": None,
                "pricing_model": None,
                "meter": meter,
                "aggregation": aggregation,
                "quantity": report.num(tally.quantity(aggregation)),
                "events": tally.events,
                "pending_events": tally.pending,
                "amount": None,
            }
            for meter, (aggregation, tally) in sorted(meters.items())
        ],
        "invoice": None,
        "projected_invoice": None,
    }


def _priced(
    selection: list[tuple[PlanItem, Period]],
    tallies: dict[tuple[str, str], Tally],
    events: list[Any],
    now: int,
    plan: Plan,
    recent_since: int | None = None,
) -> Doc:
    """The items and invoices of one subscription's selection, priced with its discounts and
    tax rates, and as its trial, cancellation and paused collection make Stripe bill them."""
    discounts, tax_rates = plan.discounts, plan.tax_rates
    report.fold_pending(selection, tallies, events, recent_since)
    metered = [(i, p) for i, p in selection if i.metered] or selection
    # A canceled subscription's final invoice ends at the cancel; any other bills the item's
    # whole current period, also when its price started inside it.
    final = plan.status in store.ENDED
    period = metered[0][1] if final else report.invoice_period(*metered[0])
    terms = report.terms_of(plan, period)
    items, so_far, projected = [], {}, {}
    for item, item_period in selection:
        tally = tallies.get((item.id, item.meter or ""))
        entry, forecast = report.item_doc(
            item,
            item_period,
            tally,
            now,
            usage_charged=report.terms_of(plan, item_period).usage_charged,
        )
        if item.held:
            # Stripe has none of it yet: it is sent when the meter is reactivated, into the
            # period open then (reporter/outbox.py), so this invoice may not bill it.
            entry["usage_held"] = True
        items.append(entry)
        so_far[item.id] = Decimal(entry["quantity"])
        projected[item.id] = forecast
    doc: Doc = {"period": report.period_doc(period), "period_basis": "subscription", "items": items}
    engine = report.engine_items(selection)
    if not engine:
        return doc | {"invoice": None, "projected_invoice": None}
    licensed = report.next_period(period, metered[0][0])
    try:
        # One discount at a time, as the pricing engine applies them: the first (see the note).
        discount = discounts[0] if discounts else None
        extra = report.pending_lines(plan.pending, period)
        invoice = project_invoice(
            engine,
            so_far,
            period=period,
            licensed_period=licensed,
            discount=discount,
            tax_rates=tax_rates,
            usage_charged=terms.usage_charged,
            renews=terms.renews,
            pending=extra,
        )
        forecast_invoice = project_invoice(
            engine,
            projected,
            period=period,
            licensed_period=licensed,
            discount=discount,
            tax_rates=tax_rates,
            usage_charged=terms.usage_charged,
            renews=terms.renews,
            pending=extra,
        )
    except PricingError as exc:
        return doc | {
            "invoice": None,
            "projected_invoice": None,
            "invoice_error": report.error_doc(exc),
        }
    return doc | {
        "invoice": report.invoice_doc(invoice, len(discounts), terms),
        "projected_invoice": report.invoice_doc(forecast_invoice, len(discounts), terms)
        | {"method": "item run rates (see items[].projection)"},
    }


@dataclasses.dataclass(frozen=True, slots=True)
class InvoiceSoFar:
    """A customer's upcoming invoice so far: the usage API's `invoice` of the current period."""

    plan: Plan
    period: Period  # the invoice's billing period
    total: int  # `invoice.total`, minor units: licensed fees, discount and tax included
    currency: str


async def invoice_so_far(
    conn: asyncpg.Connection, tenant: str, key: str, now: int
) -> InvoiceSoFar | None:
    """The current period's invoice of the customer named `key`, priced as
    `GET /v1/customers/{id}/usage` prices its `invoice` (same selection, attribution, price
    mappings and engine), from the usage committed in Postgres only: pending stream entries
    are left out (the caller reads after the aggregator's fold). None when it has no invoice:
    no such customer, no current period, no priced item, or a price the engine cannot apply."""
    try:
        plan = await store.load_plan(conn, tenant, key)
    except NotFound:
        return None
    selection = _current(plan, now)
    if not selection:
        return None
    others = [(o, found) for o in plan.others if (found := _current(o, now))]
    gone = _removed(plan, [o for o, _ in others], now)
    pairs = selection + [pair for _, sel in others for pair in sel] + gone
    # The invoice so far needs no run rate: no recent usage is read (`meters`, `recent_since`).
    periods = {i.id: p for i, p in pairs if i.meter is not None}
    asked = store.ItemUsage(tenant, plan.keys, periods)
    # No streams: checkpoints only matter to fold pending entries, and there are none here.
    [snap] = await store.read_item_usage(conn, [], [asked])

    def connect() -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        return contextlib.nullcontext(conn)

    priced = await read_priced_dimensions(conn, tenant)
    if priced.mappings:
        await _split_mapped(connect, tenant, plan, selection, snap.by_item, priced, None)
    selections = [selection] + [sel for _, sel in others]
    sources: list[dict[tuple[str, str], list[tuple[str, int]]]] = []
    main, *rest = _every_event_on_each(selections, snap.by_item, gone, sources)
    await _distinct_unions(connect, tenant, plan.keys, selections, [main, *rest], sources)
    doc = _priced(selection, main, [], now, plan)
    invoice = doc["invoice"]
    if invoice is None:
        return None
    period = Period(doc["period"]["start"], doc["period"]["end"])
    return InvoiceSoFar(plan, period, invoice["total"], invoice["currency"])


_PICK = {"max": "value_max", "last": "value_last"}


async def history(request: web.Request) -> web.Response:
    """Usage per meter and hour or day from the rollups, one page at a time."""
    tenant = await authenticate(request)
    app = request.app
    q = params.history(request.query, int(time.time()))
    after_meter, after_start = (None, None) if q.after is None else q.after
    resume = None if after_start is None else store.ts(after_start + q.step)
    dims = q.breakdown
    async with _connection(app) as conn:
        plan = await app[appkeys.USAGE_PLANS].plan(conn, tenant, request.match_info["id"])
        args = (
            tenant,
            plan.keys,
            store.ts(q.start),
            store.ts(q.end),
            q.granularity,
            q.meter,
            after_meter,
            resume,
            q.limit + 1,
        )
        if dims:
            group = [*dims.group_by, None, None, None][:3]
            rows = await conn.fetch(
                queries.HISTORY_GROUPED,
                *args,
                *group,
                [k for k, _ in dims.filters],
                [v for _, v in dims.filters],
            )
        else:
            rows = await conn.fetch(queries.HISTORY, *args)
    # A page ends after `limit` (meter, time) slots; grouped, a slot has a row per group.
    slots = list(dict.fromkeys((r["meter"], r["at"]) for r in rows))
    more = len(slots) > q.limit
    shown = set(slots[: q.limit])
    page = [r for r in rows if (r["meter"], r["at"]) in shown]
    data = []
    for r in page:
        row: Doc = {
            "meter": r["meter"],
            "aggregation": r["aggregation"],
            "start": store.unix(r["at"]),
            "end": store.unix(r["at"]) + q.step,
            "value": report.num(r[_PICK.get(r["aggregation"], "value_sum")]),
            "events": r["events"],
        }
        if dims.group_by:
            row["dimensions"] = {k: r[f"g{i + 1}"] for i, k in enumerate(dims.group_by)}
        data.append(row)
    return jsonwire.response(
        {
            "object": "usage_history",
            "customer": plan.external_id,
            "granularity": q.granularity,
            "from": q.start,
            "to": q.end,
            "meter": q.meter,
            "group_by": list(dims.group_by),
            "filter": dict(dims.filters),
            "data": data,
            "has_more": more,
            "next_cursor": params.encode_cursor(data[-1]["meter"], data[-1]["start"])
            if more
            else None,
            # History is what the aggregator has folded; pending events show in /usage only.
            "pending_included": False,
        }
    )
