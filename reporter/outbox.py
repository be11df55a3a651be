"""Outbox build: grown units → outbox rows + marks, in one transaction.

The numbered steps in `build_page` say why a crash (kill -9) between any two neither loses
usage nor puts it into the outbox twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
import orjson

from meter.dimensions import PriceMapping, route
from reporter import queries
from reporter.directory import Conn, CustomerDirectory, PeriodCalendar
from reporter.metrics import ReporterMetrics
from reporter.periods import (
    BillingPeriod,
    bills_no_more,
    is_closed,
    open_target,
    overlapping,
    starting_at,
)
from reporter.plan import (
    CUSTOMER_DELETED_USAGE,
    ITEM_GONE,
    NO_SECOND_LEFT,
    TRIAL_USAGE,
    VOIDED_USAGE,
    Mark,
    Planned,
    Unit,
    plan,
)

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    rows: int = 0  # outbox rows written (pending or late)
    marks: int = 0  # units whose mark moved (with or without a row)
    waiting_customer: int = 0  # units whose customer has no Stripe id yet
    waiting_meter: int = 0  # units whose Stripe meter cannot be reported to (count, inactive)
    unreportable: set[str] = field(default_factory=set)  # those meters of formula count
    inactive: set[str] = field(default_factory=set)  # those meters that are inactive
    carried: int = 0
    late: int = 0
    waiting: int = 0  # rows of a closed period written as `waiting`: no open period known
    released: int = 0  # `waiting` rows made due again: their item has an open period now
    deferred: int = 0  # absolute versions with no later second yet: planned again next build
    full: int = 0  # absolute versions recorded `late`: no second left in their period
    trial: int = 0  # rows of a closed trial period recorded `late`: Stripe charges none of it
    gone: int = 0  # rows of a closed period recorded `late`: their item bills the meter no more
    voided: int = 0  # rows of a period whose invoice was voided, recorded `late`: free
    deleted: int = 0  # rows of a deleted Stripe customer's item, recorded `late`: billed by nothing
    # Absolute versions planned while another window on the customer's meter overlaps theirs
    # with other bounds: Stripe bills both from one value (periods.overlapping).
    overlapping: int = 0


def _unit(
    r: asyncpg.Record, absolute: bool, mappings: dict[tuple[str, str], list[PriceMapping]]
) -> tuple[Unit, Mark | None]:
    dims = "" if absolute else r["dims"]
    found = mappings.get((r["tenant"], r["meter"]), [])
    unit = Unit(
        tenant=r["tenant"],
        customer=r["customer"],
        meter=r["meter"],
        item=r["subscription_item"],
        unit="period" if absolute else "bucket",
        unit_start=r["period_start"] if absolute else r["bucket_start"],
        period_start=r["period_start"],
        version=r["version"],
        value=r["value"],
        absolute=absolute,
        timestamp=r["last_at"] if absolute else r["bucket_start"],
        dims=dims,
        event_name=route(dims, r["meter"], found),
        meter_items=tuple(r["meter_items"]) if absolute else (),
    )
    mark = (
        None
        if r["mark_version"] is None
        else Mark(r["mark_version"], r["mark_value"], r["mark_event_time"])
    )
    return unit, mark


async def build(
    pool: asyncpg.Pool,
    directory: CustomerDirectory,
    calendar: PeriodCalendar,
    metrics: ReporterMetrics,
    *,
    page_size: int = 5000,
) -> BuildResult:
    """Turn every grown attributed unit into outbox rows; one transaction per page."""
    total = BuildResult()
    async with pool.acquire() as conn:
        total.released = await release_waiting(conn, calendar)
    after = 0
    while True:
        async with pool.acquire() as conn:
            result, last_id = await build_page(conn, directory, calendar, after, page_size)
        _add(total, result)
        if last_id is None:
            break
        after = last_id
    async with pool.acquire() as conn:
        result, _ = await build_page(conn, directory, calendar, None, page_size)
        _add(total, result)
        metrics.waiting_attribution.set(await conn.fetchval(queries.WAITING_FOR_ATTRIBUTION))
        metrics.waiting_period.set(await conn.fetchval(queries.WAITING_COUNT))
        held = await conn.fetchval(queries.HELD_ROWS)
    metrics.waiting_customer.set(total.waiting_customer)
    metrics.waiting_meter.set(total.waiting_meter + held)
    if total.unreportable:
        log.error(
            "usage waits: the Stripe meter of these event names has formula count, which meter "
            "cannot report to; recreate it with formula sum (see `meter sync`)",
            extra={"meters": sorted(total.unreportable), "units": total.waiting_meter},
        )
    if total.inactive or held:
        log.error(
            "usage waits: the Stripe meter of these event names is inactive and would drop "
            "meter events; reactivate it (the usage is sent then)",
            extra={"meters": sorted(total.inactive), "units": total.waiting_meter, "rows": held},
        )
    metrics.late.labels("carried").inc(total.carried)
    metrics.late.labels("recorded").inc(total.late)
    metrics.late.labels("waiting").inc(total.waiting)
    metrics.late.labels("trial").inc(total.trial)
    metrics.late.labels("gone").inc(total.gone)
    metrics.late.labels("voided").inc(total.voided)
    metrics.late.labels("customer_deleted").inc(total.deleted)
    metrics.held.labels("deferred").inc(total.deferred)
    metrics.held.labels("recorded").inc(total.full)
    metrics.overlapping.inc(total.overlapping)
    if total.full:
        log.error(
            "absolute usage not sent: no second left in its billing period",
            extra={"recorded": total.full},
        )
    if total.carried or total.late or total.waiting:
        log.warning(
            "late usage after invoice finalization",
            extra={"carried": total.carried, "recorded": total.late, "waiting": total.waiting},
        )
    return total


async def price_mappings(conn: Conn) -> dict[tuple[str, str], list[PriceMapping]]:
    """(tenant, meter) → its price mappings (a handful of rows, read once per page)."""
    out: dict[tuple[str, str], list[PriceMapping]] = {}
    for r in await conn.fetch(queries.PRICE_MAPPINGS):
        pairs = tuple(sorted(orjson.loads(r["filter"]).items()))
        out.setdefault((r["tenant"], r["meter"]), []).append(PriceMapping(pairs, r["event_name"]))
    return out


def _add(total: BuildResult, part: BuildResult) -> None:
    total.rows += part.rows
    total.marks += part.marks
    total.waiting_customer += part.waiting_customer
    total.waiting_meter += part.waiting_meter
    total.unreportable |= part.unreportable
    total.inactive |= part.inactive
    total.carried += part.carried
    total.late += part.late
    total.waiting += part.waiting
    total.deferred += part.deferred
    total.full += part.full
    total.trial += part.trial
    total.gone += part.gone
    total.voided += part.voided
    total.deleted += part.deleted
    total.overlapping += part.overlapping


async def build_page(
    conn: Conn,
    directory: CustomerDirectory,
    calendar: PeriodCalendar,
    after: int | None,
    page_size: int,
) -> tuple[BuildResult, int | None]:
    """One page of bucket units (rollup id > `after`), or with `after=None` all period units.

    Returns the result and the last rollup id read (None: no more pages).
    """
    async with conn.transaction():
        # 1. One builder at a time: a second one waits here and then sees our marks, so two
        #    builders never plan the same version twice. A crash releases the lock (rollback).
        await conn.execute(queries.LOCK_BUILD, queries.BUILD_LOCK_KEY)
        # 2. Read the grown units with their marks. Value and version come from one row (or one
        #    statement snapshot), so the value is exactly the one of that version; a fold that
        #    commits after this read raises the version again and is picked up next time.
        if after is None:
            records = await conn.fetch(queries.GROWN_PERIODS)
        else:
            records = await conn.fetch(queries.GROWN_BUCKETS, after, page_size)
        mappings = await price_mappings(conn) if records else {}
        units = [_unit(r, after is None, mappings) for r in records]
        last_id = records[-1]["id"] if after is not None and len(records) == page_size else None
        if not units:
            return BuildResult(), last_id
        now = await conn.fetchval("SELECT now()")
        # 3. Resolve Stripe customers. Unresolved units keep their old mark: they are found
        #    again by the next build, and wait (counted) rather than being dropped.
        stripe_ids: dict[tuple[str, str], str] = {}
        for tenant in sorted({u.tenant for u, _ in units}):
            customers = {u.customer for u, _ in units if u.tenant == tenant}
            found = await directory.stripe_customer_ids(conn, tenant, customers)
            stripe_ids.update({(tenant, c): s for c, s in found.items()})
        # 4. The billing periods of the units' items: a unit of a closed period is carried
        #    into its item's open period on its meter, waits as a `waiting` row, or is
        #    recorded `late` where no invoice will bill it (periods.py, plan.py).
        #     An absolute unit's check for overlapping windows reads every item on its meter.
        wanted = {u.item for u, _ in units} | {i for u, _ in units for i in u.meter_items}
        periods = await calendar.periods(conn, wanted)
        # 4b. Units of a meter whose Stripe meter counts events wait, keeping their marks: sent
        #     as one event carrying a bucket's value, Stripe would bill 1 for any count. So do
        #     units of an inactive meter: Stripe would accept and drop their events.
        held = await conn.fetch(
            queries.UNREPORTABLE_METERS, sorted({u.stripe_event for u, _ in units})
        )
        result = BuildResult(
            unreportable={r["meter"] for r in held if r["formula"]},
            inactive={r["meter"] for r in held if not r["formula"]},
        )
        waiting = result.unreportable | result.inactive
        planned: list[tuple[Unit, str, Planned]] = []
        for unit, mark in units:
            if unit.stripe_event in waiting:
                result.waiting_meter += 1
                continue
            known = periods.get(unit.item, [])
            own = starting_at(known, unit.period_start)
            # The usage of an item belongs to its subscription's Stripe customer; once that one
            # is deleted it is recorded, never sent to whoever holds our external id now.
            deleted = own is not None and own.customer_deleted
            stripe_id = own.customer if deleted and own is not None else None
            stripe_id = stripe_id or stripe_ids.get((unit.tenant, unit.customer))
            if stripe_id is None:
                result.waiting_customer += 1
                continue
            closed = own is not None and is_closed(own, now, calendar.grace)
            target = open_target(known, now, calendar.grace, unit.meter) if closed else None
            end = own.end if own is not None else None
            trial = own is not None and own.trial
            voided = own is not None and own.voided
            gone = closed and bills_no_more(known, unit.meter)
            p = plan(unit, mark, closed=closed, target=target, now=now, period_end=end,
                     trial=trial, voided=voided, gone=gone, customer_deleted=deleted)  # fmt: skip
            if unit.absolute and own is not None and p is not None and p.identifier is not None:
                _check_overlaps(unit, own, periods, result)
            if p is not None and p.status == "deferred":
                # Keeps its mark: the next build plans the version again, at a later second.
                result.deferred += 1
            elif p is not None:
                planned.append((unit, stripe_id, p))
        # 5. Write the rows and move the marks, in this same transaction. Identifiers are unit
        #    key + version: should the rows exist already, ON CONFLICT keeps the first copy.
        rows = [(u, s, p) for u, s, p in planned if p.identifier is not None]
        await _insert_rows(conn, rows)
        await _upsert_marks(conn, planned)
        result.rows = len(rows)
        result.marks = len(planned)
        result.carried = sum(1 for _, _, p in rows if p.carried_from is not None)
        result.late = sum(1 for _, _, p in rows if p.status == "late" and p.note is None)
        result.full = sum(1 for _, _, p in rows if p.status == "late" and p.note == NO_SECOND_LEFT)
        result.trial = sum(1 for _, _, p in rows if p.status == "late" and p.note == TRIAL_USAGE)
        result.gone = sum(1 for _, _, p in rows if p.status == "late" and p.note == ITEM_GONE)
        result.voided = sum(1 for _, _, p in rows if p.status == "late" and p.note == VOIDED_USAGE)
        result.deleted = sum(
            1 for _, _, p in rows if p.status == "late" and p.note == CUSTOMER_DELETED_USAGE
        )
        result.waiting = sum(1 for _, _, p in rows if p.status == "waiting")
        # 6. Commit (leaving the block): rows and marks become durable together. A crash before
        #    leaves neither, and the next build plans the very same rows (same identifiers);
        #    after, the marks say these versions are in the outbox, so they are never planned
        #    again, and the rows wait there, durable, for a sender.
        return result, last_id


def _check_overlaps(
    unit: Unit,
    own: BillingPeriod,
    periods: Mapping[str, list[BillingPeriod]],
    result: BuildResult,
) -> None:
    """Count and log a version of an absolute unit whose window another window on the same
    Stripe meter overlaps with other bounds: the one `last` value Stripe keeps for the customer
    bills both lines, so one may show the other window's usage (docs/billing.md)."""
    others = [p for i in unit.meter_items for p in periods.get(i, [])]
    found = overlapping(own, others, unit.stripe_event)
    if not found:
        return
    result.overlapping += 1
    log.warning(
        "absolute usage: windows on one Stripe meter overlap with other bounds; Stripe bills "
        "every overlapping line with the latest value sent, which may not be its own window's",
        extra={
            "customer": unit.customer,
            "meter": unit.stripe_event,
            "period_start": own.start.isoformat(),
            "period_end": own.end.isoformat(),
            "overlapping": sorted({(p.start.isoformat(), p.end.isoformat()) for p in found}),
        },
    )


async def release_waiting(conn: Conn, calendar: PeriodCalendar) -> int:
    """Make `waiting` rows whose item has an open period now due again; the sender moves them
    into it when it claims them (send.py). Returns how many."""
    async with conn.transaction():
        rows = await conn.fetch(queries.WAITING_ROWS)
        if not rows:
            return 0
        now = await conn.fetchval("SELECT now()")
        periods = await calendar.periods(conn, {r["subscription_item"] for r in rows})
        ids, gone, deleted = [], [], []
        for r in rows:
            known = periods.get(r["subscription_item"], [])
            if any(p.customer_deleted for p in known):
                deleted.append(r["id"])  # its customer's subscription ended uninvoiced
            elif open_target(known, now, calendar.grace, r["event_name"]):
                ids.append(r["id"])
            elif bills_no_more(known, r["event_name"]):
                gone.append(r["id"])  # no period will take it: billed by no invoice
        if ids:
            await conn.execute(queries.RELEASE_WAITING, ids)
        if gone:
            await conn.execute(queries.MARK_STATUS, gone, "late", ITEM_GONE)
        if deleted:
            await conn.execute(queries.MARK_STATUS, deleted, "late", CUSTOMER_DELETED_USAGE)
        return len(ids)


async def _insert_rows(conn: Conn, rows: Sequence[tuple[Unit, str, Planned]]) -> None:
    if not rows:
        return
    await conn.execute(
        queries.INSERT_OUTBOX,
        [p.identifier for _, _, p in rows],
        [u.tenant for u, _, _ in rows],
        [u.customer for u, _, _ in rows],
        [u.meter for u, _, _ in rows],
        [u.item for u, _, _ in rows],
        [u.period_start for u, _, _ in rows],
        [s for _, s, _ in rows],
        [u.stripe_event for u, _, _ in rows],  # the meter's name, or its price mapping's
        [p.value for _, _, p in rows],
        [u.absolute for u, _, _ in rows],
        [p.event_time for _, _, p in rows],
        [p.carried_from for _, _, p in rows],
        [p.status for _, _, p in rows],
        [p.note for _, _, p in rows],
    )


async def _upsert_marks(conn: Conn, planned: Sequence[tuple[Unit, str, Planned]]) -> None:
    if not planned:
        return
    await conn.execute(
        queries.UPSERT_MARKS,
        [u.tenant for u, _, _ in planned],
        [u.customer for u, _, _ in planned],
        [u.meter for u, _, _ in planned],
        [u.mark_item for u, _, _ in planned],
        [u.unit for u, _, _ in planned],
        [u.unit_start for u, _, _ in planned],
        [p.mark.version for _, _, p in planned],
        [p.mark.value for _, _, p in planned],
        [p.mark.event_time for _, _, p in planned],
        [u.dims for u, _, _ in planned],
    )
