"""The aggregator's side of billing changes (`UsageUpkeep`, meter/core/ports.py): billing calls
it, through the process's wiring, when its data moves usage already folded."""

from __future__ import annotations

import datetime as dt

import asyncpg

from aggregator.cuts import move_after_cut
from aggregator.reattribute import reattribute, sweep
from meter.core.ports import Attributor
from meter.dimensions import DEFAULT_MAX_COMBINATIONS


class AggregatorUpkeep:
    def __init__(
        self, attributor: Attributor, dimension_limit: int = DEFAULT_MAX_COMBINATIONS
    ) -> None:
        self.attributor = attributor
        self.dimension_limit = dimension_limit  # METER_DIMENSION_COMBINATIONS

    async def move_after_cut(
        self,
        conn: asyncpg.Connection,
        tenant: str,
        customers: list[str],
        item: str,
        cut: dt.datetime,
    ) -> int:
        return await move_after_cut(conn, tenant, customers, item, cut)

    async def reattribute(
        self, conn: asyncpg.Connection, tenant: str, customer: str, since: dt.datetime
    ) -> None:
        await reattribute(
            conn, self.attributor, tenant, customer, since, dimension_limit=self.dimension_limit
        )

    async def sweep(self, conn: asyncpg.Connection, since: dt.datetime) -> None:
        await sweep(conn, self.attributor, since, dimension_limit=self.dimension_limit)
