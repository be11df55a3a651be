"""`meter usage void`: take one accepted, aggregated event back out of its bucket.

The bucket shrinks and its version grows, so the reporter's next outbox build sends the negative
delta to Stripe. Stripe documents this way of correcting usage: "You can also fix incorrectly
recorded usage data by recording negative quantities. If the overall cycle usage is negative,
Stripe reports the invoice line item usage quantity as 0" (docs.stripe.com, billing/
subscriptions/usage-based/meters/configure, "Fix incorrect usage data"); meter event
adjustments only cancel whole events sent within the last 24 hours. Only delta
meters (sum, count) can be voided: a bucket's max, last or distinct count cannot be recomputed
without folding all its other events again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from meter.core.ports import Conn, SubtractEvent
from meter.errors import InvalidRequest
from reporter import queries

VOIDABLE = frozenset({"sum", "count"})


class VoidRefused(InvalidRequest):
    """The event cannot be voided (unknown, not attributed yet, or an absolute meter)."""


@dataclass(frozen=True)
class Voided:
    """The outcome: `already` is True when an earlier void did it (nothing changed now)."""

    tenant: str
    event_id: str
    already: bool
    meter: str = ""
    value: Decimal = Decimal(0)
    bucket_start: dt.datetime | None = None


async def void_event(conn: Conn, tenant: str, event_id: str, subtract: SubtractEvent) -> Voided:
    """Void one event in one transaction; a second void of the same event changes nothing.
    `subtract` is the aggregator's, which owns the buckets and totals (chosen by the wiring)."""
    async with conn.transaction():
        # 1. Serialize voids of this event; a concurrent second void waits, then sees step 5's
        #    row and returns as a no-op. A crash anywhere rolls back every step together.
        await conn.execute(queries.LOCK_VOID, tenant, event_id)
        if await conn.fetchval(queries.VOIDED, tenant, event_id):
            return Voided(tenant, event_id, already=True)
        # 2. The event as folded: the raw log (usage_events) holds it with its attribution.
        event = await conn.fetchrow(queries.FIND_EVENT, tenant, event_id)
        if event is None:
            raise VoidRefused(
                f"no aggregated event {event_id!r} for tenant {tenant!r} in the raw log "
                "(unknown id, not aggregated yet, past retention, or METER_RAW_LOG=0)",
                param="id",
            )
        # 3. Refuse what cannot be subtracted.
        if event["aggregation"] not in VOIDABLE:
            raise VoidRefused(
                f"meter {event['meter']!r} aggregates by {event['aggregation']}; only sum and "
                "count meters can be voided (a bucket's max/last/distinct count cannot be "
                "recomputed without folding its events again)",
                param="id",
            )
        # Unattributed buckets are re-folded from the raw log by re-attribution, which would
        # put the event back; they are not reported either, so there is nothing to correct yet.
        if event["subscription_item"] is None:
            raise VoidRefused(
                f"event {event_id!r} is not attributed to a subscription item yet; "
                "retry once the aggregator has attributed it",
                param="id",
            )
        value = event["value"] if event["aggregation"] == "sum" else Decimal(1)
        # 4. Subtract it from its bucket and raise the bucket's version: the reporter's next
        #    build finds the bucket grown and sends the negative delta (plan.py).
        #    And from its period's running total (usage_totals), in the same transaction.
        bucket_start = await subtract(
            conn,
            tenant,
            event["customer"],
            event["meter"],
            event["subscription_item"],
            event["period_start"],
            event["event_time"],
            event["value"],
            event["dims"] or "",
        )
        if bucket_start is None:
            raise VoidRefused(f"event {event_id!r} has no bucket to subtract it from", param="id")
        # 5. Record the void, in the same transaction as the subtraction.
        await conn.execute(
            queries.INSERT_VOID,
            tenant,
            event_id,
            event["customer"],
            event["meter"],
            event["value"],
            event["event_time"],
            event["subscription_item"],
            bucket_start,
        )
        return Voided(tenant, event_id, False, event["meter"], value, bucket_start)
