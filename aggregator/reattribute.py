"""Re-attribution: move a customer's unattributed usage onto subscription items, exactly once.

A bucket whose events are all in the raw log is rebuilt from them rather than edited: a sum can
be split by time, but a max or a distinct count cannot. A bucket holding events the raw log lacks
(folded with METER_RAW_LOG=0) moves whole when one item period covers its hour, and otherwise
stays unattributed: nothing is ever deleted that is not put back (aggregator/moves.py decides).
In one transaction, holding the fold lock exclusively (flushes hold it shared, so none is half-way
through this customer):
1. read the customer's unattributed buckets and raw events still marked unattributed (within
   raw retention);
2. decide per bucket: rebuild, move whole, or stay (stuck); attribute the rebuilt buckets' events
   with the billing data now known;
3. mark the raw events that got an item (rebuilt ones one by one, a whole bucket's with it);
4. delete the rebuilt and the whole-moved buckets, and the distinct values credited to them;
5. fold the rebuilt events still unattributed back into fresh unattributed buckets;
6. fold the newly attributed events into their items' buckets (merged like any late event,
   so the reporter sees a version bump);
7. merge each whole-moved bucket's state into its item's bucket of the same hour, its distinct
   values into the item period's set (credited only where new there).
Every event is thus in exactly one bucket before and after, and each write to an item bucket
updates its period total with it (store.upsert_buckets); a crash anywhere rolls it all back.
Called by the billing module when a customer or subscription appears, and by a periodic sweep.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import orjson

from aggregator import queries
from aggregator.attribution import UNATTRIBUTED, Attribution, Attributor, attribute, index_periods
from aggregator.dimensions import add_combos, dimension_versions, with_dimensions
from aggregator.flush import FOLD_LOCK_KEY
from aggregator.fold import BucketKey, Rollup, UniqueCandidate, bucket_of
from aggregator.moves import BucketAt, Moves, Unattributed, force_whole, plan_moves
from aggregator.store import apply_fold, merge_states, unique_meters
from aggregator.windows import Window, hour_of, overlap, to_datetime, to_ms
from meter.dimensions import DEFAULT_MAX_COMBINATIONS
from meter.errors import InvalidRequest
from meter.events import UsageEvent

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Reattributed:
    """What re-attribution did, summed over calls (the sweep's gauge reads `stuck`)."""

    events: int = 0
    whole_buckets: int = 0
    # Unattributed buckets that hold events missing from the raw log and that no one item period
    # covers whole: they cannot be split, so they stay (see docs/billing.md, "Re-attribution").
    stuck: int = 0


class NoItemPeriod(InvalidRequest):
    """A forced move names an instant that no subscription item period covers."""


def _event(tenant: str, row: asyncpg.Record) -> UsageEvent:
    return UsageEvent(
        tenant=tenant,
        id=row["event_id"],
        customer=row["customer"],
        meter=row["meter"],
        value=row["value"],
        timestamp_ms=to_ms(row["event_time"]),
        received_at_ms=to_ms(row["received_at"]),
        properties=orjson.loads(row["properties"]) if row["properties"] else None,
    )


def _state(row: asyncpg.Record) -> Rollup:
    """A stored bucket's state (distinct values are credited again where they land)."""
    return Rollup(
        count=row["event_count"],
        total=Decimal(row["value_sum"]),
        maximum=Decimal(row["value_max"]),
        last_value=Decimal(row["last_value"]),
        last_ts_ms=to_ms(row["last_at"]),
        last_id=row["last_event_id"],
    )


async def reattribute(
    conn: asyncpg.Connection,
    attributor: Attributor,
    tenant: str,
    customer: str,
    since: dt.datetime,
    done: Reattributed | None = None,
    force: tuple[str, int] | None = None,
    dimension_limit: int = DEFAULT_MAX_COMBINATIONS,
) -> int:
    """Attach the customer's unattributed usage since `since` (raw retention start) to the items
    now known; return how many events moved (`done`, if given, adds up the details). `force`
    (meter, instant ms) is the operator's way out for a stuck bucket: it moves whole under the
    item period billing that instant (`meter reattribute --force-whole`)."""
    done = done if done is not None else Reattributed()
    async with conn.transaction():
        await conn.execute(queries.LOCK_FOLD_EXCLUSIVE, FOLD_LOCK_KEY)
        # 1.
        bucket_rows = await conn.fetch(queries.UNATTRIBUTED_BUCKETS, tenant, customer, since)
        if not bucket_rows:
            return 0
        rows = await conn.fetch(queries.UNATTRIBUTED_EVENTS, tenant, customer, since)
        events = [_event(tenant, r) for r in rows]
        raw_dims = {r["event_id"]: r["dims"] or "" for r in rows}
        # 2.
        index = index_periods(await attributor.item_periods(conn, tenant, {customer}))
        unique_props = await unique_meters(conn)
        # An hour's buckets, one per combination of dimension values: decided on together (the
        # raw events of an hour are counted together), each moved whole with its combination.
        buckets: dict[BucketAt, list[asyncpg.Record]] = {}
        for r in bucket_rows:
            buckets.setdefault((r["meter"], to_ms(r["bucket_start"])), []).append(r)
        moves = plan_moves(
            customer,
            [
                Unattributed(
                    m,
                    Window(start, to_ms(rs[0]["bucket_end"])),
                    sum(r["event_count"] for r in rs),
                )
                for (m, start), rs in buckets.items()
            ],
            Counter((e.meter, hour_of(e.timestamp_ms).start_ms) for e in events),
            {m for t, m in unique_props if t == tenant},
            index,
        )
        if force is not None:
            if attribute(customer, force[0], force[1], index) is UNATTRIBUTED:
                raise NoItemPeriod(f"no subscription item bills {force[0]!r} of {customer!r} then")
            uniques = {m for t, m in unique_props if t == tenant}
            moves = force_whole(moves, customer, *force, index, uniques)
        _report_stuck(tenant, customer, moves, done)
        rebuilt: list[tuple[BucketKey, UsageEvent]] = []
        marked: list[tuple[UsageEvent, Attribution, str]] = []
        for e in events:
            at = (e.meter, hour_of(e.timestamp_ms).start_ms)
            if at in moves.stuck:
                continue
            whole = moves.whole.get(at)
            if whole is not None:
                marked.append((e, whole, raw_dims[e.id]))  # keeps its bucket's combination
                continue
            found = attribute(e.customer, e.meter, e.timestamp_ms, index)
            rebuilt.append((bucket_of(e, found), e))
        if not moves.whole and all(k.item is None for k, _ in rebuilt):
            return 0
        # 2b. The rebuilt events' combinations, through the guard of the sets they land in
        #     (admissions in this transaction), in event order as a flush decides.
        rebuilt, _, _ = await with_dimensions(
            conn, rebuilt, await dimension_versions(conn), dimension_limit
        )
        stay = [(k, e) for k, e in rebuilt if k.item is None]
        moved = [(k, e) for k, e in rebuilt if k.item is not None]
        found_of = {e.id: attribute(e.customer, e.meter, e.timestamp_ms, index) for _, e in moved}
        marked += [(e, found_of[e.id], k.dims) for k, e in moved]
        # Events staying unattributed whose combination changed (a raised guard limit) are
        # marked too, still without an item: a void or the next rebuild finds their bucket.
        changed = [(k, e) for k, e in stay if k.dims != raw_dims[e.id]]
        # 3.
        await conn.execute(
            queries.SET_ATTRIBUTION,
            tenant,
            customer,
            [e.id for e, _, _ in marked] + [e.id for _, e in changed],
            [to_datetime(e.timestamp_ms) for e, _, _ in marked]
            + [to_datetime(e.timestamp_ms) for _, e in changed],
            [a.item for _, a, _ in marked] + [None for _ in changed],
            [to_datetime(a.period.start_ms if a.period else 0) for _, a, _ in marked]
            + [None for _ in changed],
            [d for _, _, d in marked] + [k.dims for k, _ in changed],
        )
        # 4.
        gone = sorted(moves.rebuild | moves.whole.keys())
        await conn.execute(
            queries.DELETE_UNATTRIBUTED_BUCKETS,
            tenant,
            customer,
            [m for m, _ in gone],
            [to_datetime(start) for _, start in gone],
        )
        unique_gone = [at for at in gone if (tenant, at[0]) in unique_props]
        values = (
            await conn.fetch(
                queries.DELETE_UNATTRIBUTED_VALUES,
                tenant,
                customer,
                [m for m, _ in unique_gone],
                [to_datetime(start) for _, start in unique_gone],
            )
            if unique_gone
            else []
        )
        # 5.
        await apply_fold(conn, stay, unique_props)
        # 6.
        await apply_fold(conn, moved, unique_props)
        # 7.
        whole_rollups: dict[BucketKey, Rollup] = {}
        target_of: dict[tuple[str, int, str], BucketKey] = {}
        for at, found in moves.whole.items():
            assert found.item is not None
            assert found.period is not None
            # The hour, or under a forced move the part of it inside the chosen period.
            window = overlap(hour_of(at[1]), found.period)
            for row in buckets[at]:
                key = BucketKey(
                    tenant,
                    customer,
                    at[0],
                    found.item,
                    found.period.start_ms,
                    window.start_ms,
                    window.end_ms,
                    row["dims"],
                )
                target_of[(*at, row["dims"])] = key
                state = _state(row)
                whole_rollups[key] = (
                    state if key not in whole_rollups else whole_rollups[key].merge(state)
                )
        await add_combos(conn, list(whole_rollups))
        candidates = [
            UniqueCandidate((tenant, customer, t.meter, t.item, t.period_start_ms), v["value"], t)
            for v in values
            if (t := target_of.get((v["meter"], to_ms(v["bucket_start"]), v["dims"]))) is not None
        ]
        await merge_states(conn, whole_rollups, sorted(candidates, key=UniqueCandidate.sort_key))
    events_moved = len(moved) + sum(s.count for s in whole_rollups.values())
    done.events += events_moved
    done.whole_buckets += len(whole_rollups)
    log.info(
        "usage re-attributed",
        extra={
            "tenant": tenant,
            "customer": customer,
            "events": events_moved,
            "whole_buckets": len(whole_rollups),
        },
    )
    return events_moved


def _report_stuck(tenant: str, customer: str, moves: Moves, done: Reattributed) -> None:
    if not moves.stuck:
        return
    done.stuck += len(moves.stuck)
    log.warning(
        "unattributed usage cannot be split",
        extra={
            "tenant": tenant,
            "customer": customer,
            "buckets": len(moves.stuck),
            "meters": sorted({m for m, _ in moves.stuck}),
            "first_hour": to_datetime(min(start for _, start in moves.stuck)).isoformat(),
        },
    )


async def sweep(
    conn: asyncpg.Connection,
    attributor: Attributor,
    since: dt.datetime,
    done: Reattributed | None = None,
    dimension_limit: int = DEFAULT_MAX_COMBINATIONS,
) -> int:
    """Try re-attribution for every customer with unattributed buckets; return events moved."""
    moved = 0
    for row in await conn.fetch(queries.UNATTRIBUTED_CUSTOMERS, since):
        moved += await reattribute(
            conn,
            attributor,
            row["tenant"],
            row["customer"],
            since,
            done,
            dimension_limit=dimension_limit,
        )
    return moved
