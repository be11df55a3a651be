"""The aggregator's `Attributor` over the billing tables: which subscription item bills a
customer's meter in which period.

Events name a customer by our external id or by the Stripe `cus_` id (DESIGN, event contract),
so both keys match; the returned ItemPeriod carries the key as the events spell it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import asyncpg

from meter.billing import queries
from meter.core.ports import ItemPeriod
from meter.core.windows import Window, to_ms


class PostgresAttributor:
    """Reads subscription_item_periods inside the caller's transaction (the aggregator's flush)."""

    async def item_periods(
        self, conn: asyncpg.Connection, tenant: str, customers: Collection[str]
    ) -> Sequence[ItemPeriod]:
        if not customers:
            return ()
        rows = await conn.fetch(queries.ITEM_PERIODS, tenant, sorted(customers))
        return [
            ItemPeriod(
                r["customer"],
                r["meter"],
                r["item"],
                Window(to_ms(r["period_start"]), to_ms(r["period_end"])),
            )
            for r in rows
        ]
