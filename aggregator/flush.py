"""One flush of one shard: stream batch → one Postgres transaction → checkpoint → XTRIM.

This is where exactly-once is decided; the numbered steps below say why a crash (kill -9)
between any two of them neither loses nor double-counts an event.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import asyncpg
import orjson

from aggregator import queries
from aggregator.attribution import Attributor, ItemPeriod, attribute, index_periods
from aggregator.dimensions import GuardSet, dimension_versions, with_dimensions
from aggregator.fold import BucketKey, bucket_of
from aggregator.store import apply_fold, unique_meters
from aggregator.windows import HOUR_MS, day_of
from meter.connections import REDIS_ERRORS, RedisClient
from meter.core import touches
from meter.core.streams import text
from meter.crashpoints import Faults
from meter.dimensions import DEFAULT_MAX_COMBINATIONS
from meter.events import UsageEvent, event_key
from meter.redis_keys import Keys

log = logging.getLogger(__name__)

# Bound on a worker's cache of admitted dimension combinations (cleared when over it).
MAX_CACHED_COMBOS = 1_000_000

# Key of the advisory lock flushes hold shared and re-attribution holds exclusively.
FOLD_LOCK_KEY = 0x6D657465725F666F  # "meter_fo"


class CheckpointMoved(Exception):
    """Another worker advanced this shard's checkpoint: our batch was rolled back, unfolded."""


# Crash-test points of this module (meter/crashpoints.py): before_commit, after_commit, after_trim.


@dataclass(frozen=True, slots=True)
class FlushResult:
    read: int = 0  # stream entries read
    inserted: int = 0  # events new to Postgres, folded
    duplicates: int = 0  # events Postgres (or the batch itself) already had
    buckets: int = 0  # buckets touched
    oldest_ms: int | None = None  # Redis timestamp of the oldest unflushed entry before the flush
    last_id: str | None = None  # the checkpoint after the flush
    other: int = 0  # events the cardinality guard folded into `_other` (docs/dimensions.md)


def next_stream_id(stream_id: str) -> str:
    """The smallest stream id after `stream_id` (XTRIM MINID keeps ids >= MINID)."""
    ms, _, seq = stream_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


async def ensure_partitions(
    conn: asyncpg.Connection, days: Iterable[dt.date], known: set[dt.date]
) -> None:
    """Create the raw-log partitions of these days unless this process already knows them."""
    for day in sorted(set(days) - known):
        await conn.execute(queries.ENSURE_PARTITION, day)
        known.add(day)


async def read_checkpoint(conn: asyncpg.Connection, stream: str) -> str:
    await conn.execute(queries.ENSURE_CHECKPOINT, stream)
    last_id: str = await conn.fetchval(queries.GET_CHECKPOINT, stream)
    return last_id


def _record(stream_id: str, event: UsageEvent, key: BucketKey) -> tuple[object, ...]:
    # Optimisation: only text and integers go over COPY (the value as its decimal text, times as
    # unix ms); INSERT_NEW_EVENTS casts them in SQL. Building a Decimal and two datetimes per
    # event and binary-encoding them cost more than the rest of the record; the casts are exact.
    return (
        event_key(event.tenant, event.id),
        event.tenant,
        event.id,
        event.customer,
        event.meter,
        event.value,
        event.timestamp_ms,
        event.received_at_ms,
        orjson.dumps(event.properties).decode() if event.properties else None,
        key.item,
        key.period_start_ms,
        stream_id,
        key.dims,
    )


def _uniform_hour(periods: Sequence[ItemPeriod], hour_ms: int) -> bool:
    """Whether no period starts or ends inside (hour_ms, hour_ms + 1 h): then every instant of
    the hour gets the same attribution and bucket, whatever the index order."""
    end = hour_ms + HOUR_MS
    for p in periods:  # a loop, not any(genexpr): usually 0 or 1 periods, called ~once an event
        if hour_ms < p.period.start_ms < end or hour_ms < p.period.end_ms < end:
            return False
    return True


async def _attributed(
    conn: asyncpg.Connection, attributor: Attributor, events: list[UsageEvent]
) -> list[tuple[BucketKey, UsageEvent]]:
    """Each event with its bucket, attributed with the billing data the transaction sees."""
    customers: dict[str, set[str]] = {}
    for e in events:
        customers.setdefault(e.tenant, set()).add(e.customer)
    indexes = {
        tenant: index_periods(await attributor.item_periods(conn, tenant, names))
        for tenant, names in customers.items()
    }
    # Optimisation: an event's bucket depends only on (tenant, customer, meter, hour) unless a
    # billing period starts or ends inside that hour, so it is computed once per such tuple and
    # shared (attribute + bucket_of per event was the largest per-event cost). Hours holding a
    # boundary are attributed event by event.
    cache: dict[tuple[str, str, str, int], BucketKey] = {}
    out: list[tuple[BucketKey, UsageEvent]] = []
    for e in events:
        ts = e.timestamp_ms
        hour = ts - ts % HOUR_MS
        memo = (e.tenant, e.customer, e.meter, hour)
        key = cache.get(memo)
        if key is None:
            index = indexes[e.tenant]
            key = bucket_of(e, attribute(e.customer, e.meter, ts, index))
            if _uniform_hour(index.get((e.customer, e.meter), ()), hour):
                cache[memo] = key
        out.append((key, e))
    return out


async def flush_shard(
    conn: asyncpg.Connection,
    redis: RedisClient,
    keys: Keys,
    shard: int,
    *,
    batch_size: int,
    attributor: Attributor,
    known_days: set[dt.date],
    faults: Faults | None = None,
    raw_log: bool = True,
    dimension_limit: int = DEFAULT_MAX_COMBINATIONS,
    admitted_combos: set[tuple[GuardSet, str]] | None = None,
) -> FlushResult:
    """Fold the next batch (≤ batch_size entries) of one shard's stream into Postgres.

    Raises CheckpointMoved if another worker got there first (nothing of ours was committed).
    With `raw_log` off the events are deduplicated and folded but not written to usage_events.
    """
    stream = keys.stream(shard)
    faults = faults or Faults()
    checkpoint = await read_checkpoint(conn, stream)
    # 1. Read from Redis after the checkpoint. Nothing is changed yet: a crash here loses nothing.
    entries = cast(
        "list[tuple[bytes, dict[bytes, bytes]]]",
        await redis.xrange(stream, min=f"({checkpoint}", max="+", count=batch_size),
    )
    if not entries:
        return FlushResult(last_id=checkpoint)
    # Optimisation: decode, drop repeats within the batch (keeping the first, as dedupe_batch
    # does) and remember each event's stream id in one pass over the entries, not three.
    first: dict[tuple[str, str], tuple[str, UsageEvent]] = {}
    for entry_id, fields in entries:
        event = UsageEvent.decode(fields[b"e"])
        first.setdefault((event.tenant, event.id), (text(entry_id), event))
    events = [event for _, event in first.values()]
    first_id, last_id = text(entries[0][0]), text(entries[-1][0])

    # 2. Create missing day partitions, in their own short transactions. They are empty tables:
    #    a crash after creating some leaves only harmless, reusable partitions.
    if raw_log:
        await ensure_partitions(conn, (day_of(e.timestamp_ms) for e in events), known_days)

    async with conn.transaction():
        # 3. Everything from here to commit is one transaction: a crash anywhere inside rolls it
        #    all back, the checkpoint stays put, and the next run re-reads the same entries.
        await conn.execute(queries.LOCK_FOLD_SHARED, FOLD_LOCK_KEY)
        # 4. Compare-and-set the checkpoint first: it row-locks this shard's checkpoint, so a
        #    second worker on the same shard (a lost lease) waits here, then fails the CAS and
        #    rolls back without folding anything.
        status = await conn.execute(queries.ADVANCE_CHECKPOINT, stream, checkpoint, last_id)
        if status != "UPDATE 1":
            raise CheckpointMoved(f"{stream}: checkpoint moved past {checkpoint}")
        # 5. Attribute to subscription items with the billing data as of this transaction.
        pairs = await _attributed(conn, attributor, events)
        # 5b. Each event's combination of dimension values, through the cardinality guard: its
        #     admissions are written here, in this transaction, so they commit or roll back with
        #     the buckets; a replay decides again from the same committed sets and the same
        #     entries in the same order, hence the same way (docs/dimensions.md). Past step 4,
        #     this flush is the one in flight on its stream, which is what lets it take the
        #     guard's set locks shared (aggregator/dimensions.py guard).
        pairs, other, admitted = await with_dimensions(
            conn,
            pairs,
            await dimension_versions(conn),
            dimension_limit,
            admitted_combos,
            shared=True,
        )
        # 6. Stage the batch with COPY, then write to the raw log only the events whose key
        #    Postgres has never seen; the statement returns the others, the duplicates. With the
        #    raw log off, the same probe and insert into usage_event_keys decide it and nothing
        #    else is written: the dedupe, and so exactly-once, does not depend on the raw log.
        await conn.execute(queries.INDEX_PROBE)
        if raw_log:
            await conn.copy_records_to_table(
                queries.BATCH_TABLE,
                records=[_record(first[(e.tenant, e.id)][0], e, key) for key, e in pairs],
                columns=queries.BATCH_COLUMNS,
            )
            seen = await conn.fetch(queries.INSERT_NEW_EVENTS)
        else:
            # Without the raw log only the keys are needed: sent as arrays, no staging.
            seen = await conn.fetch(
                queries.INSERT_NEW_IDS,
                [event_key(e.tenant, e.id) for e in events],
                [e.tenant for e in events],
                [e.id for e in events],
            )
        await conn.execute(queries.END_INDEX_PROBE)
        if seen:
            old = {(r["tenant"], r["event_id"]) for r in seen}
            new_pairs = [(k, e) for k, e in pairs if (e.tenant, e.id) not in old]
        else:
            new_pairs = pairs  # the usual case: every event of the batch is new
        # 7. Fold only those new events into their buckets (sorted upserts, version bump).
        rollups = await apply_fold(conn, new_pairs, await unique_meters(conn))
        faults.hit("before_commit")
    # 8. Committed: raw rows, buckets and checkpoint moved together. A crash from here on
    #    re-reads nothing (the checkpoint is past the batch); a re-read after a lost commit
    #    acknowledgement is caught by the CAS in step 4 or by the dedupe in step 6.
    faults.hit("after_commit")
    if admitted_combos is not None and admitted:
        # Committed: these stay admitted (sets only grow), so later batches need not ask.
        if len(admitted_combos) > MAX_CACHED_COMBOS:
            admitted_combos.clear()
        admitted_combos.update(admitted)
    # 8b. Tell the alert evaluator whose usage changed: after the commit, so that it reads what
    #     was folded. Best effort: a touch lost here (crash, Redis error) is found by the
    #     evaluator's sweep, only later (docs/alerts.md).
    if rollups:
        try:
            # Per bucket, not per event: the buckets are those of the new events.
            touched = {(k.tenant, k.customer, k.meter) for k in rollups}
            await touches.publish(redis, keys, touched)
        except REDIS_ERRORS as exc:
            log.warning("alert touches not published", extra={"error": str(exc)})
    # 9. Trim the stream up to the checkpoint. Only bounds Redis memory: a crash before it leaves
    #    entries that step 1 skips next time (they lie at or before the checkpoint).
    await redis.xtrim(stream, minid=next_stream_id(last_id), approximate=False)
    faults.hit("after_trim")
    return FlushResult(
        read=len(entries),
        inserted=len(new_pairs),
        duplicates=len(entries) - len(new_pairs),
        buckets=len(rollups),
        oldest_ms=int(first_id.partition("-")[0]),
        last_id=last_id,
        other=other,
    )
