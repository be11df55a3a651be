"""Taking one folded event back out of its bucket and its period's total (a void).

The aggregator owns usage_rollups and usage_totals; a void (reporter/voids.py, `meter usage
void`) asks for the subtraction through the `SubtractEvent` port (meter/core/ports.py), in the
void's transaction.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from aggregator import queries
from meter.core.ports import Conn


async def subtract_event(
    conn: Conn,
    tenant: str,
    customer: str,
    meter: str,
    item: str,
    period_start: dt.datetime,
    event_time: dt.datetime,
    value: Decimal,
    dims: str = "",
) -> dt.datetime | None:
    """Subtract the event from the bucket holding `event_time` and `dims` (the combination the
    raw log says the event was folded into) and raise the bucket's version
    (the reporter's next build sends the negative delta), and from its period's running total.
    Returns the bucket's start; None: no such bucket (nothing changed)."""
    bucket = await conn.fetchrow(
        queries.SUBTRACT_EVENT, tenant, customer, meter, item, event_time, value, period_start, dims
    )
    if bucket is None:
        return None
    await conn.execute(
        queries.SUBTRACT_TOTAL, tenant, customer, meter, item, bucket["period_start"], value
    )
    start: dt.datetime = bucket["bucket_start"]
    return start
