"""`setup(app)`: the usage API's routes, its plan cache (with the listener that keeps it
current) and its shared reads (of the pending events, then of the usage in Postgres), added to
meter's app in one call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from meter import appkeys
from meter.coalescing import Batcher
from meter.connections import PooledConnection, acquire, close_pool
from meter.tasks import cancel_and_wait
from meter.usage import api, pending, plans, queries, store
from meter.usage.plans import PlanCache

USAGE = "/v1/customers/{id}/usage"
SNAPSHOT_TIMEOUT_S = 10.0  # far above the statement's time (docs/performance.md); ends a stuck one


def setup(app: web.Application) -> None:
    app[appkeys.USAGE_PLANS] = PlanCache()
    app[appkeys.USAGE_PRICED] = {}
    app.cleanup_ctx.append(_plan_listener)
    app.cleanup_ctx.append(_shared_reads)
    app.router.add_get(USAGE, api.usage)
    app.router.add_get(USAGE + "/history", api.history)


async def _plan_listener(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(
        plans.listen(app[appkeys.SETTINGS].database_url, app[appkeys.USAGE_PLANS])
    )
    yield
    await cancel_and_wait(task)


async def _shared_reads(app: web.Application) -> AsyncIterator[None]:
    # After meter.app's resources: it needs their Redis client.
    settings = app[appkeys.SETTINGS]
    names = pending.streams(app[appkeys.KEYS], settings.shards)
    # One connection: the batcher sends one statement at a time (queries.SNAPSHOT_SETTINGS say
    # why it is not one of the API pool's). The pool replaces it when it breaks. Every usage
    # request of the process waits behind its statement, so a stuck one (a half-open connection
    # after a failover) must not wait for TCP to give up: it fails after SNAPSHOT_TIMEOUT_S, its
    # requests answer 500 (a read: nothing was written), and the next batch runs.
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=1,
        max_size=1,
        connection_class=PooledConnection,
        server_settings=queries.SNAPSHOT_SETTINGS,
        command_timeout=SNAPSHOT_TIMEOUT_S,
    )
    assert pool is not None

    async def read_snapshots(wanted: list[store.ItemUsage]) -> list[store.Snapshot]:
        async with acquire(pool) as conn:
            return await store.read_item_usage(conn, names, wanted)

    try:
        async with (
            pending.PendingReads(app[appkeys.REDIS], names) as reads,
            Batcher(read_snapshots) as snapshots,
        ):
            app[appkeys.USAGE_PENDING] = reads
            app[appkeys.USAGE_SNAPSHOTS] = snapshots
            app[appkeys.USAGE_PG] = pool
            yield
    finally:
        await close_pool(pool, "usage")
