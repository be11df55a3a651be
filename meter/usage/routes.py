"""`setup(app)`: the usage API's routes, its plan cache (with the listener that keeps it
current) and its shared reads of the pending events, added to meter's app in one call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from meter import appkeys
from meter.usage import api, pending, plans
from meter.usage.plans import PlanCache

USAGE = "/v1/customers/{id}/usage"


def setup(app: web.Application) -> None:
    app[appkeys.USAGE_PLANS] = PlanCache()
    app.cleanup_ctx.append(_plan_listener)
    app.cleanup_ctx.append(_pending_reads)
    app.router.add_get(USAGE, api.usage)
    app.router.add_get(USAGE + "/history", api.history)


async def _plan_listener(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(
        plans.listen(app[appkeys.SETTINGS].database_url, app[appkeys.USAGE_PLANS])
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _pending_reads(app: web.Application) -> AsyncIterator[None]:
    # After meter.app's resources: it needs their Redis client.
    settings = app[appkeys.SETTINGS]
    names = pending.streams(app[appkeys.KEYS], settings.shards)
    async with pending.PendingReads(app[appkeys.REDIS], names) as reads:
        app[appkeys.USAGE_PENDING] = reads
        yield
