"""The usage API's plan cache, kept current by Postgres notifications.

Only the *plan* (customer, subscription, items, prices, meters) is cached, per (tenant, customer
key); usage and amounts never are (docs/api.md, "Usage and projected invoice"). Billing's writes
notify `meter_plans` at commit (migrations/0010_plan_changes.sql); each serve process LISTENs on a
connection of its own and drops the entries named, so entries can live `LISTENING_TTL_S`. While
that connection is down the cache is emptied and entries live only `PLAN_TTL_S`.

Why the generation counter: a request that read the plan just before a change committed may
finish after the change's notification was handled; storing its now-old plan would keep it
until the TTL. So a plan is stored only if no notification (nor listener state change) arrived
while it was being read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from meter.connections import PG_ERRORS
from meter.usage.store import Plan, load_plan

log = logging.getLogger(__name__)

CHANNEL = "meter_plans"
ALL = "*"  # the payload that invalidates every plan (a price, meter or definition changed)
PLAN_TTL_S = 5.0  # without a listening connection
LISTENING_TTL_S = 300.0  # a backstop only: notifications invalidate first
PING_S = 10.0  # how often an idle listening connection proves it is alive
RETRY_S = 1.0
_MAX_ENTRIES = 50_000

Loader = Callable[[asyncpg.Connection, str, str], Awaitable[Plan]]


@dataclass(slots=True)
class _Entry:
    plan: Plan
    expires: float


class PlanCache:
    """`load_plan` answers, until a notification names the customer or the TTL runs out
    (monotonic clock). Unknown customers are not cached, so a new one is found at once."""

    def __init__(
        self,
        *,
        ttl_s: float = PLAN_TTL_S,
        listening_ttl_s: float = LISTENING_TTL_S,
        load: Loader = load_plan,
    ) -> None:
        self._ttl_s = ttl_s
        self._listening_ttl_s = listening_ttl_s
        self._load = load
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._by_customer: dict[str, set[tuple[str, str]]] = {}
        self._generation = 0
        self.listening = False

    def cached(self, tenant: str, key: str) -> Plan | None:
        """The plan if it is cached and current, without a connection; else None."""
        entry = self._entries.get((tenant, key))
        return entry.plan if entry is not None and entry.expires > time.monotonic() else None

    async def plan(self, conn: asyncpg.Connection, tenant: str, key: str) -> Plan:
        cached = self.cached(tenant, key)
        if cached is not None:
            return cached
        now = time.monotonic()
        generation = self._generation
        plan = await self._load(conn, tenant, key)
        if generation == self._generation:  # nothing changed while we read (module docstring)
            self._store((tenant, key), plan, now)
        return plan

    def _store(self, key: tuple[str, str], plan: Plan, now: float) -> None:
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries = {k: e for k, e in self._entries.items() if e.expires > now}
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            self._by_customer = {}
            for k, e in self._entries.items():
                self._by_customer.setdefault(e.plan.stripe_id, set()).add(k)
        ttl = self._listening_ttl_s if self.listening else self._ttl_s
        self._entries[key] = _Entry(plan, now + ttl)
        self._by_customer.setdefault(plan.stripe_id, set()).add(key)

    def changed(self, customer: str) -> None:
        """A notification: the plan of this customer (Stripe id), or of everyone (ALL), changed."""
        self._generation += 1
        if customer == ALL:
            self._clear()
            return
        for key in self._by_customer.pop(customer, ()):
            self._entries.pop(key, None)

    def set_listening(self, listening: bool) -> None:
        """Whether changes are being announced. Either way, what is cached may have missed some:
        on losing the listener, or on getting it (back), everything is dropped."""
        self._generation += 1
        self._clear()
        self.listening = listening

    def _clear(self) -> None:
        self._entries.clear()
        self._by_customer.clear()


async def listen(database_url: str, cache: PlanCache) -> None:
    """Keep one connection LISTENing for plan changes and feed them to `cache`, reconnecting
    whenever it is lost; runs until cancelled."""
    while True:
        try:
            await _listen_once(database_url, cache)
        except PG_ERRORS as exc:
            log.warning("plan change listener lost; retrying", extra={"error": str(exc)})
        await asyncio.sleep(RETRY_S)


async def _listen_once(database_url: str, cache: PlanCache) -> None:
    conn = await asyncpg.connect(database_url, timeout=5.0)
    lost = asyncio.Event()

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
        cache.changed(str(payload))

    conn.add_termination_listener(lambda _conn: lost.set())
    try:
        await conn.add_listener(CHANNEL, on_notify)
        cache.set_listening(True)
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), PING_S)
            except TimeoutError:
                # A dead peer without a FIN is noticed only by using the connection.
                await asyncio.wait_for(conn.execute("SELECT 1"), 5.0)
    finally:
        cache.set_listening(False)
        if not conn.is_closed():
            conn.terminate()
