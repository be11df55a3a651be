"""`meter sync`: backfill every customer, product, price, meter, subscription and invoice from
Stripe, through the same order-safe writes as the webhooks.

Safe to run at any time, next to live webhooks: each object is written as Stripe's state "now",
stamped with the current time, so it replaces only rows whose last event is not newer, and a
webhook event newer than the sync still wins. Resumable: after each page the last id listed is
saved in billing_sync_cursors; an interrupted run continues after it, and a completed resource
clears its cursor so the next run starts over. (A customer on a Stripe test clock lives at the
clock's time, so rows stamped by its events may look newer than a sync and are left alone.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

from meter.billing import queries, store
from meter.billing.gateway import ORDER, Obj, PaymentGateway
from meter.billing.store import Effects
from meter.core.ports import UsageUpkeep

log = logging.getLogger(__name__)

PAGE_SIZE = 100

Writer = Callable[[asyncpg.Connection, Obj, int, store.Refetch, str], Awaitable[Effects]]


def _writer(kind: str, upkeep: UsageUpkeep) -> Writer:
    async def product(c: asyncpg.Connection, o: Obj, t: int, r: store.Refetch, _: str) -> Effects:
        return await store.apply_product(c, o, t, r)

    async def price(c: asyncpg.Connection, o: Obj, t: int, r: store.Refetch, _: str) -> Effects:
        return await store.apply_price(c, o, t, r)

    async def invoice(c: asyncpg.Connection, o: Obj, t: int, r: store.Refetch, _: str) -> Effects:
        return await store.apply_invoice(c, o, t, r)

    async def item(c: asyncpg.Connection, o: Obj, t: int, r: store.Refetch, _: str) -> Effects:
        return await store.apply_invoice_item(c, o, t, deleted=False)

    async def subscription(
        c: asyncpg.Connection, o: Obj, t: int, r: store.Refetch, tenant: str
    ) -> Effects:
        return await store.apply_subscription(c, o, t, r, tenant, upkeep)

    writers: dict[str, Writer] = {
        "product": product,
        "price": price,
        "billing.meter": store.apply_meter,
        "customer": store.apply_customer,
        "subscription": subscription,
        "invoiceitem": item,
        "invoice": invoice,
    }
    return writers[kind]


async def sync(
    conn: asyncpg.Connection,
    gateway: PaymentGateway,
    default_tenant: str,
    upkeep: UsageUpkeep,
    *,
    kinds: tuple[str, ...] = ORDER,
    max_pages: int | None = None,
    page_size: int = PAGE_SIZE,
) -> tuple[dict[str, int], Effects]:
    """Backfill; returns objects written per kind and what to re-attribute. `max_pages` stops
    early (as a crash would), leaving the cursor for the next run."""
    counts: dict[str, int] = {}
    effects = Effects()
    pages = 0
    for kind in kinds:
        write = _writer(kind, upkeep)
        if max_pages is not None and pages >= max_pages:
            break
        cursor = await conn.fetchval(queries.SYNC_CURSOR, kind)
        counts[kind] = 0
        while True:
            if max_pages is not None and pages >= max_pages:
                return counts, effects
            page = await gateway.list_page(kind, cursor, page_size)
            pages += 1
            now = int(time.time())
            async with conn.transaction():
                for obj in page.items:

                    async def same(k: str, i: str, obj: Obj = obj) -> Obj | None:
                        return obj

                    effects.merge(await write(conn, obj, now, same, default_tenant))
                    counts[kind] += 1
                cursor = page.items[-1]["id"] if page.items and page.has_more else None
                await conn.execute(queries.SAVE_SYNC_CURSOR, kind, cursor)
            if cursor is None:
                break
        log.info("synced", extra={"kind": kind, "objects": counts[kind]})
    return counts, effects
