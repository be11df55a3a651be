"""Re-attribution: move a customer's unattributed usage onto subscription items, exactly once.

Unattributed buckets (null item) are rebuilt from the raw log rather than edited: a sum can be
split by time, but a max or a distinct count cannot. In one transaction, holding the fold lock
exclusively (flushes hold it shared, so none is half-way through this customer):
1. read the customer's raw events still marked unattributed (within raw retention);
2. attribute them with the billing data now known; mark the ones that got an item;
3. delete the customer's unattributed buckets and distinct-value sets;
4. fold the events still unattributed back into fresh unattributed buckets;
5. fold the newly attributed events into their items' buckets (merged like any late event,
   so the reporter sees a version bump).
Every event is thus in exactly one bucket before and after; a crash anywhere rolls it all back.
Called by the billing module when a customer or subscription appears, and by a periodic sweep.
"""

from __future__ import annotations

import datetime as dt
import logging

import asyncpg
import orjson

from aggregator import queries
from aggregator.attribution import UNATTRIBUTED, Attributor, attribute, index_periods
from aggregator.flush import FOLD_LOCK_KEY
from aggregator.fold import BucketKey, bucket_of
from aggregator.store import apply_fold, unique_meters
from aggregator.windows import to_datetime, to_ms
from meter.events import UsageEvent

log = logging.getLogger(__name__)


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


async def reattribute(
    conn: asyncpg.Connection,
    attributor: Attributor,
    tenant: str,
    customer: str,
    since: dt.datetime,
) -> int:
    """Attach the customer's unattributed usage since `since` (raw retention start) to the items
    now known; return how many events moved."""
    async with conn.transaction():
        await conn.execute(queries.LOCK_FOLD_EXCLUSIVE, FOLD_LOCK_KEY)
        # 1.
        rows = await conn.fetch(queries.UNATTRIBUTED_EVENTS, tenant, customer, since)
        events = [_event(tenant, r) for r in rows]
        # 2.
        index = index_periods(await attributor.item_periods(conn, tenant, {customer}))
        moved: list[tuple[BucketKey, UsageEvent]] = []
        stay: list[tuple[BucketKey, UsageEvent]] = []
        for e in events:
            found = attribute(e.customer, e.meter, e.timestamp_ms, index)
            (stay if found is UNATTRIBUTED else moved).append((bucket_of(e, found), e))
        if not moved:
            return 0
        await conn.execute(
            queries.SET_ATTRIBUTION,
            tenant,
            customer,
            [e.id for _, e in moved],
            [to_datetime(e.timestamp_ms) for _, e in moved],
            [k.item for k, _ in moved],
            [to_datetime(k.period_start_ms or 0) for k, _ in moved],
        )
        # 3.
        await conn.execute(queries.DELETE_UNATTRIBUTED_BUCKETS, tenant, customer, since)
        await conn.execute(queries.DELETE_UNATTRIBUTED_VALUES, tenant, customer, since)
        unique_props = await unique_meters(conn)
        # 4.
        await apply_fold(conn, stay, unique_props)
        # 5.
        await apply_fold(conn, moved, unique_props)
    log.info(
        "usage re-attributed", extra={"tenant": tenant, "customer": customer, "events": len(moved)}
    )
    return len(moved)


async def sweep(conn: asyncpg.Connection, attributor: Attributor, since: dt.datetime) -> int:
    """Try re-attribution for every customer with unattributed buckets; return events moved."""
    moved = 0
    for row in await conn.fetch(queries.UNATTRIBUTED_CUSTOMERS, since):
        moved += await reattribute(conn, attributor, row["tenant"], row["customer"], since)
    return moved
