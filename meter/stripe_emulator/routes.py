"""The route table of each surface, and the background work of the api app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from meter.stripe_emulator import (
    billing_cycle,
    catalog,
    clocks,
    customers,
    event_destinations,
    invoice_items,
    invoices,
    meter_events,
    meters,
    sessions,
    subscriptions,
    webhooks,
)
from meter.stripe_emulator.core import EMULATOR, Route
from meter.tasks import cancel_and_wait

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]
log = logging.getLogger(__name__)


def api_routes() -> list[Route]:
    return [
        *meters.routes(),
        *meter_events.routes(),
        *customers.routes(),
        *catalog.routes(),
        *subscriptions.routes(),
        *invoices.routes(),
        *invoice_items.routes(),
        *clocks.routes(),
        *sessions.routes(),
        *webhooks.routes(),
        *event_destinations.routes(),
    ]


def meter_events_routes() -> list[Route]:
    return meter_events.stream_routes()


def register_control(app: web.Application) -> None:
    sessions.register_control(app)


def background_tasks() -> list[CleanupCtx]:
    return [webhooks.delivery_ctx, ticker_ctx]


async def ticker_ctx(app: web.Application) -> AsyncIterator[None]:
    """Roll real-time subscriptions and persist state (when configured) every tick."""
    emu = app[EMULATOR]

    async def tick() -> None:
        while True:
            await asyncio.sleep(emu.config.tick_seconds)
            try:
                billing_cycle.run_due(emu, None)
                if emu.config.state_file:
                    emu.state.save(emu.config.state_file)
            except Exception:
                log.exception("stripe emulator tick failed")

    task = asyncio.create_task(tick())
    yield
    await cancel_and_wait(task)
    if emu.config.state_file:
        emu.state.save(emu.config.state_file)
