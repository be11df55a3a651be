"""Writing folded buckets to Postgres: the part the flush and re-attribution share (I/O, thin)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from aggregator import queries
from aggregator.fold import (
    BucketKey,
    Rollup,
    UniqueCandidate,
    credit_unique,
    fold,
    period_totals,
    sorted_buckets,
    unique_candidates,
)
from aggregator.windows import to_datetime, to_ms
from meter.events import UsageEvent


def _ts(ms: int | None) -> object:
    return None if ms is None else to_datetime(ms)


async def unique_meters(conn: asyncpg.Connection) -> dict[tuple[str, str], str]:
    """(tenant, meter) → counted property, for every unique_count meter."""
    rows = await conn.fetch(queries.UNIQUE_COUNT_METERS)
    return {(r["tenant"], r["meter"]): r["unique_property"] for r in rows}


async def _insert_unique(
    conn: asyncpg.Connection, candidates: Sequence[UniqueCandidate]
) -> list[UniqueCandidate]:
    """Insert candidate values; return those that were new to their set."""
    if not candidates:
        return []
    rows = await conn.fetch(
        queries.INSERT_UNIQUE_VALUES,
        [c.set_key[0] for c in candidates],
        [c.set_key[1] for c in candidates],
        [c.set_key[2] for c in candidates],
        [c.set_key[3] for c in candidates],
        [_ts(c.set_key[4]) for c in candidates],
        [c.value for c in candidates],
        [to_datetime(c.bucket.start_ms) for c in candidates],
        [c.bucket.dims for c in candidates],
    )
    by_key = {(c.set_key, c.value): c for c in candidates}
    new: list[UniqueCandidate] = []
    for r in rows:
        period = r["period_start"]
        set_key = (
            r["tenant"],
            r["customer"],
            r["meter"],
            r["subscription_item"],
            None if period is None else to_ms(period),
        )
        new.append(by_key[(set_key, r["value"])])
    return new


def _state_columns(states: Sequence[Rollup]) -> list[list[object]]:
    """The aggregation state columns as both upserts take them (queries._STATE_VALUES): count,
    sum, max, last value (decimal text), last time (unix ms), last id, unique count."""
    return [
        [s.count for s in states],
        [str(s.total) for s in states],
        [str(s.maximum) for s in states],
        [str(s.last_value) for s in states],
        [s.last_ts_ms for s in states],
        [s.last_id for s in states],
        [s.unique for s in states],
    ]


async def upsert_buckets(conn: asyncpg.Connection, rollups: dict[BucketKey, Rollup]) -> None:
    """Merge bucket states into usage_rollups, in the one global key order, and the same
    deltas into the period totals (usage_totals)."""
    if not rollups:
        return
    rows = sorted_buckets(rollups)
    await conn.execute(
        queries.UPSERT_BUCKETS,
        [k.tenant for k, _ in rows],
        [k.customer for k, _ in rows],
        [k.meter for k, _ in rows],
        [k.item for k, _ in rows],
        [k.period_start_ms for k, _ in rows],
        [k.start_ms for k, _ in rows],
        [k.end_ms for k, _ in rows],
        *_state_columns([s for _, s in rows]),
        [k.dims for k, _ in rows],
    )
    # The same deltas summed per (item, period, meter), in the same transaction: the usage API
    # reads a period's total from one row instead of ~720 buckets. Committed with the buckets,
    # so a crash loses or keeps both (flush.py's steps are unchanged).
    totals = period_totals(rollups)
    if totals:
        await conn.execute(
            queries.UPSERT_TOTALS,
            [k[0] for k, _ in totals],
            [k[1] for k, _ in totals],
            [k[2] for k, _ in totals],
            [k[3] for k, _ in totals],
            [k[4] for k, _ in totals],
            *_state_columns([t for _, t in totals]),
        )


async def apply_fold(
    conn: asyncpg.Connection,
    pairs: Sequence[tuple[BucketKey, UsageEvent]],
    unique_props: dict[tuple[str, str], str],
) -> dict[BucketKey, Rollup]:
    """Fold events that are in the raw log for the first time into their buckets (in the
    caller's transaction): distinct values first, then the bucket upsert. Returns the deltas."""
    rollups = fold(pairs)
    await merge_states(conn, rollups, unique_candidates(pairs, unique_props))
    return rollups


async def merge_states(
    conn: asyncpg.Connection,
    rollups: dict[BucketKey, Rollup],
    candidates: Sequence[UniqueCandidate],
) -> None:
    """Merge bucket states into their buckets (in the caller's transaction): the distinct
    values first, each credited to its bucket (in `rollups`, in place) if new to its set, then
    the bucket upsert with the period totals."""
    credit_unique(rollups, await _insert_unique(conn, candidates))
    await upsert_buckets(conn, rollups)
