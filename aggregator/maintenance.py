"""Raw-log housekeeping: day partitions created ahead of time, old ones dropped (retention).

Rollups are never touched: retention only bounds the raw event log (and its dedupe ids).
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import asyncpg

from aggregator import queries
from aggregator.windows import partition_days, retention_cutoff
from meter.config import Settings

log = logging.getLogger(__name__)

AHEAD_DAYS = 2


def now_ms() -> int:
    return int(time.time() * 1000)


async def create_partitions(
    conn: asyncpg.Connection, settings: Settings, at_ms: int | None = None
) -> list[dt.date]:
    """Make sure every day an accepted event can fall on has its partition; return new days."""
    created: list[dt.date] = []
    at = now_ms() if at_ms is None else at_ms
    for day in partition_days(at, settings.late_window_s, AHEAD_DAYS):
        if await conn.fetchval(queries.ENSURE_PARTITION, day):
            created.append(day)
    if created:
        log.info("raw partitions created", extra={"days": [d.isoformat() for d in created]})
    return created


async def drop_old_partitions(
    conn: asyncpg.Connection, settings: Settings, at_ms: int | None = None
) -> list[str]:
    """Drop raw partitions past the retention age, with their dedupe ids; return their names."""
    cutoff = retention_cutoff(now_ms() if at_ms is None else at_ms, settings.raw_retention_s)
    async with conn.transaction():
        dropped = [r[0] for r in await conn.fetch(queries.DROP_PARTITIONS_BEFORE, cutoff)]
    if dropped:
        log.info("raw partitions dropped", extra={"partitions": dropped})
    return dropped


async def run_maintenance(conn: asyncpg.Connection, settings: Settings) -> None:
    """The scheduled job: partitions ahead, retention behind."""
    await create_partitions(conn, settings)
    await drop_old_partitions(conn, settings)
