"""Events for customers or meters the billing data does not know.

By default such events are accepted and attributed when billing data arrives (nothing is
lost); the answer carries a `warning` (`unknown_customer` / `unknown_meter`) on the item, and
meter_event_warnings_total counts them. METER_STRICT trades that for early feedback: an unknown
customer or meter is answered `rejected` with that reason, and nothing is written.
Answers are cached per name for `ttl_s`, so a customer created in Stripe is accepted within
`ttl_s` of its webhook, and a burst of events costs one query per request at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection

import asyncpg

from meter import queries
from meter.billing import queries as billing_queries
from meter.connections import PG_ERRORS

_MAX_ENTRIES = 100_000


class KnownNames:
    """Which customers and meters of a tenant exist, cached briefly."""

    def __init__(self, pool: asyncpg.Pool, *, ttl_s: float = 5.0) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._customers: dict[tuple[str, str], tuple[bool, float]] = {}
        self._meters: dict[tuple[str, str], tuple[bool, float]] = {}

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

    async def warnings(
        self, tenant: str, customers: Collection[str], meters: Collection[str], *, timeout_s: float
    ) -> tuple[set[str], set[str]]:
        """`unknown`, best effort, for warnings outside strict mode: when Postgres fails or is
        slower than `timeout_s`, nothing is unknown and the names are not asked again for
        `ttl_s` — ingest, which needs only Redis, never waits on nor fails with Postgres."""
        now = time.monotonic()
        # Warm: one pass over the names, no task, no query.
        unknown_customers = self._fresh_unknown(self._customers, tenant, customers, now)
        if unknown_customers is not None:
            unknown_meters = self._fresh_unknown(self._meters, tenant, meters, now)
            if unknown_meters is not None:
                return unknown_customers, unknown_meters
        try:
            return await asyncio.wait_for(self.unknown(tenant, customers, meters), timeout_s)
        except PG_ERRORS:
            now = time.monotonic()
            for cache, names in ((self._customers, customers), (self._meters, meters)):
                stale = self._stale(cache, tenant, names, now)
                self._store(cache, tenant, stale, stale, now)
            return set(), set()

    @staticmethod
    def _fresh_unknown(
        cache: dict[tuple[str, str], tuple[bool, float]],
        tenant: str,
        names: Collection[str],
        now: float,
    ) -> set[str] | None:
        """The names cached as unknown; None when any name is not cached or its entry is stale."""
        unknown = set()
        for name in names:
            entry = cache.get((tenant, name))
            if entry is None or entry[1] < now:
                return None
            if not entry[0]:
                unknown.add(name)
        return unknown

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
