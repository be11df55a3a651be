"""Events for customers or meters the billing data does not know.

By default such events are accepted and attributed when billing data arrives (nothing is
lost); the answer carries a `warning` (`unknown_customer` / `unknown_meter`) on the item, and
meter_event_warnings_total counts them. METER_STRICT trades that for early feedback: an unknown
customer or meter is answered `rejected` with that reason, and nothing is written.
Answers are cached per name for `ttl_s`, so a customer created in Stripe is accepted within
`ttl_s` of its webhook, and a burst of events costs one query per request at most. Warnings
never hold a request for a name already read: past `ttl_s` its answer serves while one read
per tenant refreshes it in the background.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Collection

import asyncpg

from meter import queries
from meter.billing import queries as billing_queries
from meter.connections import PG_ERRORS
from meter.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_MAX_ENTRIES = 100_000


class KnownNames:
    """Which customers and meters of a tenant exist, cached briefly."""

    def __init__(
        self, pool: asyncpg.Pool, *, ttl_s: float = 5.0, warning_timeout_s: float = 0.25
    ) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        # Outside strict mode the lookup only adds warnings: it never holds ingest longer.
        self._warning_timeout_s = warning_timeout_s
        self._customers: dict[tuple[str, str], tuple[bool, float]] = {}
        self._meters: dict[tuple[str, str], tuple[bool, float]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        # Per tenant, the customers and meters found stale since its refresh last took them.
        self._pending: dict[str, tuple[set[str], set[str]]] = {}

    async def unknown(
        self, tenant: str, customers: Collection[str], meters: Collection[str]
    ) -> tuple[set[str], set[str]]:
        """The customers and meters among these that billing does not know."""
        now = time.monotonic()
        missing_c = self._stale(self._customers, tenant, customers, now)
        missing_m = self._stale(self._meters, tenant, meters, now)
        if missing_c or missing_m:
            async with self._pool.acquire() as conn:
                if missing_c:
                    rows = await conn.fetch(
                        billing_queries.STRIPE_IDS_OF_CUSTOMERS, tenant, list(missing_c)
                    )
                    found = {r["external_id"] for r in rows} | {r["stripe_id"] for r in rows}
                    self._store(self._customers, tenant, missing_c, found, now)
                if missing_m:
                    rows = await conn.fetch(queries.KNOWN_METERS, tenant, list(missing_m))
                    self._store(self._meters, tenant, missing_m, {r["meter"] for r in rows}, now)
        return self._cached(tenant, customers, meters)

    def _cached(
        self, tenant: str, customers: Collection[str], meters: Collection[str]
    ) -> tuple[set[str], set[str]]:
        return (
            {c for c in customers if not self._customers[tenant, c][0]},
            {m for m in meters if not self._meters[tenant, m][0]},
        )

    def warnings_now(
        self, tenant: str, customers: Collection[str], meters: Collection[str]
    ) -> tuple[set[str], set[str]] | None:
        """The warnings from the cache, without waiting: None when a name was never read (then
        await `warnings`). Entries past `ttl_s` still answer — a warning is advice — while one
        task per tenant reads again, in the background, every name found stale meanwhile: a
        request never waits on Postgres for a name it has seen."""
        unknown_customers: set[str] = set()
        unknown_meters: set[str] = set()
        now = time.monotonic()
        stale = False
        for cache, names, unknown in (
            (self._customers, customers, unknown_customers),
            (self._meters, meters, unknown_meters),
        ):
            for name in names:
                entry = cache.get((tenant, name))
                if entry is None:
                    return None
                if not entry[0]:
                    unknown.add(name)
                if entry[1] < now:
                    stale = True
        if stale:
            pending = self._pending.get(tenant)
            if pending is None:
                pending = self._pending[tenant] = (set(), set())
            pending[0].update(customers)
            pending[1].update(meters)
            if tenant not in self._refreshing:
                task = asyncio.create_task(self._refresh(tenant))
                self._refreshing[tenant] = task
                task.add_done_callback(functools.partial(self._refreshed, tenant))
        return unknown_customers, unknown_meters

    async def _refresh(self, tenant: str) -> None:
        """Read the names requests found stale, until none is left: the entries of a thousand
        customers going stale in turn cost a query per round, not one per request."""
        while pending := self._pending.pop(tenant, None):
            await self.warnings(tenant, pending[0], pending[1])

    async def close(self) -> None:
        """Cancel the background refreshes (before the pool closes)."""
        self._pending.clear()
        await cancel_and_wait(*self._refreshing.values())

    def _refreshed(self, tenant: str, task: asyncio.Task[None]) -> None:
        self._refreshing.pop(tenant, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("known names: refresh failed", extra={"error": repr(task.exception())})

    async def warnings(
        self, tenant: str, customers: Collection[str], meters: Collection[str]
    ) -> tuple[set[str], set[str]]:
        """`unknown`, best effort, for warnings outside strict mode: when Postgres fails or is
        slower than `warning_timeout_s`, nothing is unknown and the names are not asked again for
        `ttl_s` — ingest, which needs only Redis, never waits on nor fails with Postgres."""
        try:
            return await asyncio.wait_for(
                self.unknown(tenant, customers, meters), self._warning_timeout_s
            )
        except PG_ERRORS:
            now = time.monotonic()
            for cache, names in ((self._customers, customers), (self._meters, meters)):
                stale = self._stale(cache, tenant, names, now)
                self._store(cache, tenant, stale, stale, now)
            return set(), set()

    @staticmethod
    def _stale(
        cache: dict[tuple[str, str], tuple[bool, float]],
        tenant: str,
        names: Collection[str],
        now: float,
    ) -> set[str]:
        return {n for n in names if (entry := cache.get((tenant, n))) is None or entry[1] < now}

    def _store(
        self,
        cache: dict[tuple[str, str], tuple[bool, float]],
        tenant: str,
        names: set[str],
        found: set[str],
        now: float,
    ) -> None:
        if len(cache) > _MAX_ENTRIES:
            cache.clear()  # a crude bound: the next requests simply ask Postgres again
        for name in names:
            cache[tenant, name] = (name in found, now + self._ttl_s)
