"""A billing period cut short: usage folded into it past the cut moves to the new period.

When Stripe resets a subscription's billing cycle (`billing_cycle_anchor` now, a resume), the
item's current period ends at the reset and a new one starts there. Events after the reset that
were aggregated before the billing module learned of it were attributed to the old period, into
whole-hour buckets; afterwards, events of the same hours go to the new period, and a bucket is
identified by (item, bucket start): without this move the two would meet in one row, counted in
one period's bucket and the other period's total.

What moves: every bucket of the item that starts at or after the cut (whole buckets, never split:
the reporter has sent them at their start time, which Stripe places in the new period too). The
hour that holds the cut stays in the old period as one bucket: the reporter sent it at the hour's
start, before the cut, so Stripe bills it in the old period, and so does meter.

Called by the billing module in the transaction that records the new period (store.py), so the
cut and the move commit together.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from aggregator import queries
from aggregator.flush import FOLD_LOCK_KEY


async def move_after_cut(
    conn: asyncpg.Connection, tenant: str, customers: list[str], item: str, cut: dt.datetime
) -> int:
    """Move the item's buckets at or after `cut` into the period starting at `cut`; returns how
    many old periods gave buckets. Runs in the caller's transaction."""
    # 1. Wait for every flush in flight and hold new ones off until commit (flushes hold this
    #    lock shared): a flush that read the periods before the cut has committed its buckets,
    #    so they are moved here; one after commit reads the cut periods and folds correctly.
    await conn.execute(queries.LOCK_FOLD_EXCLUSIVE, FOLD_LOCK_KEY)
    args = (tenant, customers, item, cut)
    old = [r["period_start"] for r in await conn.fetch(queries.PERIODS_TO_MOVE, *args)]
    if not old:
        return 0
    # 2. Buckets, their raw events (voids find the bucket by the period recorded there) and
    #    their distinct values move together; a crash rolls all of it back with the cut.
    await conn.execute(queries.DROP_MOVED_DUPLICATE_VALUES, *args)
    await conn.execute(queries.MOVE_UNIQUE_VALUES, *args)
    await conn.execute(queries.ADMIT_MOVED_COMBOS, *args)
    await conn.execute(queries.MOVE_BUCKETS_TO_PERIOD, *args)
    await conn.execute(queries.MOVE_RAW_EVENTS_TO_PERIOD, *args)
    # 3. The totals of both periods, folded again from their buckets.
    periods = [*old, cut]
    await conn.execute(queries.DELETE_TOTALS_OF, tenant, customers, item, periods)
    await conn.execute(queries.INSERT_TOTALS_OF, tenant, customers, item, periods)
    return len(old)
