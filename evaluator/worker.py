"""The evaluator process: touches from the aggregator, and a periodic full sweep.

Promptness comes from the touches: after each commit the aggregator adds the (tenant, customer,
meter)s it folded to a Redis stream (`Keys.alert_touches`), which evaluators read in one consumer
group, so each touch goes to one of them. Completeness comes from the sweep: every
METER_EVALUATOR_SWEEP_INTERVAL each evaluator evaluates every rule for every customer with usage
of its meter, so a touch lost (aggregator crash before it, Redis restart, an evaluator dying with
touches unacknowledged) only makes an alert later, never missed. Evaluating twice is harmless:
each firing is claimed once in Postgres (evaluator/fire.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
from redis import exceptions as redis_errors
from redis.exceptions import ResponseError

from evaluator import fire, queries, reading
from evaluator.fire import Rule
from evaluator.metrics import EvaluatorMetrics
from meter.alerts import rules
from meter.billing.rules import LIVE_STATUSES
from meter.config import Settings
from meter.connections import (
    PG_ERRORS,
    REDIS_ERRORS,
    PooledConnection,
    RedisClient,
    acquire,
    close_pool,
    redis_client,
)
from meter.core import touches
from meter.core.streams import text
from meter.crashpoints import Faults
from meter.migrate import require_schema
from meter.redis_keys import Keys
from meter.tasks import cancel_and_wait
from meter.webhooks import events

log = logging.getLogger(__name__)

GROUP = "evaluators"
TOUCH_BATCH = 100
TOUCH_BLOCK_MS = 1000
# A touch read by an evaluator that died unacknowledged is taken over after this long.
CLAIM_IDLE_MS = 60_000
# A touch delivered more often than this (taken over again and again) is dead-lettered.
MAX_DELIVERIES = 5
# How far back a current period may have started: a yearly price's period (usage_totals), and a
# calendar month for usage without a subscription item (unattributed rollups).
TOTALS_LOOKBACK = dt.timedelta(days=367)
ROLLUPS_LOOKBACK = dt.timedelta(days=32)
# Postgres or Redis out of reach: the round is retried as a whole, no use going on with the next
# customer. Any other failure is one rule's, customer's or touch's, skipped and counted.
UNREACHABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
)
TRANSIENT: tuple[type[Exception], ...] = (
    *PG_ERRORS,
    *REDIS_ERRORS,
)


def _entry_order(entry_id: Any) -> tuple[int, int]:
    ms, _, seq = text(entry_id).partition("-")
    return int(ms), int(seq or 0)


class Evaluator:
    """`async with Evaluator(settings) as e: await e.sweep()` (or `await e.run(stop)`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis: RedisClient | None = None,
        metrics: EvaluatorMetrics | None = None,
        faults: Faults | None = None,
        consumer: str | None = None,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        self.metrics = metrics or EvaluatorMetrics()
        self.faults = faults or Faults()
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._redis = redis
        self._own_redis = redis is None
        self._pool: asyncpg.Pool | None = None

    @property
    def redis(self) -> RedisClient:
        assert self._redis is not None
        return self._redis

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None
        return self._pool

    async def __aenter__(self) -> Evaluator:
        self._pool = await asyncpg.create_pool(
            self.settings.database_url,
            min_size=1,
            max_size=3,
            connection_class=PooledConnection,
        )
        try:
            async with acquire(self.pool) as conn:
                await require_schema(conn)
            if self._redis is None:
                # Above the touch read's block time.
                self._redis = redis_client(self.settings.redis_url, socket_timeout=10.0)
        except BaseException:
            await self._pool.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._own_redis and self._redis is not None:
            await self._redis.aclose()
        await close_pool(self.pool, "evaluator")

    # -- evaluation ------------------------------------------------------------------------

    async def _evaluate(self, conn: asyncpg.Connection, rule_list: Iterable[Rule], key: str) -> int:
        """Evaluate rules for the customer named `key`; returns the events enqueued."""
        now = int(time.time())
        readings: dict[tuple[str | None, bool, tuple[tuple[str, str], ...]], reading.Reading] = {}
        enqueued = 0
        for rule in rule_list:
            with_limit = rule.kind == rules.PERCENT_OF_LIMIT
            wanted = (rule.meter, with_limit, rule.filter)
            found = readings.get(wanted)
            if found is None:
                # 1. Read (evaluator/fire.py): nothing written yet. No meter: the whole invoice.
                if rule.meter is None:
                    found = await reading.read_invoice(conn, rule.tenant, key, now)
                else:
                    found = await reading.read(
                        conn,
                        rule.tenant,
                        key,
                        rule.meter,
                        now,
                        with_limit=with_limit,
                        dimension_filter=rule.filter,
                    )
                readings[wanted] = found
            outcome = await fire.evaluate(conn, self.redis, self.keys, rule, found, self.faults)
            self.metrics.evaluations.inc()
            self.metrics.fired.labels(fire.event_type(rule)).inc(len(outcome.fired))
            self.metrics.fired.labels(events.LIMIT_REACHED).inc(outcome.reached)
            self.metrics.fired.labels(events.LIMIT_CLEARED).inc(outcome.cleared)
            enqueued += len(outcome.fired) + outcome.reached + outcome.cleared
        return enqueued

    async def evaluate_touch(self, tenant: str, key: str, meters: Sequence[str]) -> int:
        """The rules folds of `meters`' usage by the customer named `key` concern: the meters',
        and those on the whole invoice, each evaluated once however many meters were folded."""
        async with acquire(self.pool) as conn:
            _, keys = await reading.customer_keys(conn, tenant, key)
            rows = await conn.fetch(queries.RULES_FOR_CUSTOMER, tenant, list(meters), list(keys))
            if not rows:
                return 0
            return await self._evaluate(conn, [Rule.of(r) for r in rows], key)

    async def sweep(self) -> int:
        """Every rule for every customer it may concern, then the lifts of cleared limits;
        returns the events enqueued. A rule or customer whose evaluation fails (for a reason
        other than an unreachable Postgres or Redis) is logged and counted; the sweep goes on."""
        started = time.perf_counter()
        enqueued = 0
        now = dt.datetime.now(dt.UTC)
        async with acquire(self.pool) as conn:
            for row in await conn.fetch(queries.ALL_RULES):
                try:
                    enqueued += await self._sweep_rule(conn, Rule.of(row), now)
                except UNREACHABLE:
                    raise
                except Exception:
                    self._failed("evaluator: rule skipped in this sweep", rule=row["id"])
            enqueued += await self.lift_cleared(conn)
        self.metrics.sweep_seconds.set(time.perf_counter() - started)
        self.metrics.last_sweep.set(time.time())
        return enqueued

    async def _sweep_rule(self, conn: asyncpg.Connection, rule: Rule, now: dt.datetime) -> int:
        if rule.customer is not None:
            candidates = [rule.customer]
        else:
            found = await conn.fetch(
                queries.CUSTOMERS_OF_METER,
                rule.tenant,
                rule.meter,
                now - TOTALS_LOOKBACK,
                rule.id,
                now - ROLLUPS_LOOKBACK,
                sorted(LIVE_STATUSES),
            )
            candidates = sorted(r["customer"] for r in found)
        enqueued = 0
        seen: set[str] = set()
        for key in candidates:
            try:
                # A customer's events may name it by either key: evaluated once.
                customer, _ = await reading.customer_keys(conn, rule.tenant, key)
                if customer in seen:
                    continue
                seen.add(customer)
                enqueued += await self._evaluate(conn, [rule], key)
            except UNREACHABLE:
                raise
            except Exception:
                self._failed("evaluator: customer skipped in this sweep", rule=rule.id, key=key)
        return enqueued

    async def lift_cleared(self, conn: asyncpg.Connection) -> int:
        """The evaluator owns the lifting of blocks (the API only deletes the rule). In order:
        1. One transaction: clear the limits deleted rules still hold, each enqueuing its
           usage.limit_cleared (reason rule_deleted). A crash before the commit leaves them for
           the next sweep; after it, step 2 of the next sweep lifts them.
        2. After the commit, lift in Redis every cleared limit whose period has not ended, the
           ones cleared earlier included: idempotent and scoped to the rule and the period, so
           a lift lost to a crash or a Redis error, or undone by an evaluator's late block, holds
           again within a sweep. Returns the events enqueued."""
        async with conn.transaction():
            orphans = await conn.fetch(queries.CLEAR_LIMITS_OF_DELETED_RULES)
            for r in orphans:
                await fire.enqueue_cleared(
                    conn, r["tenant"], r["rule"], r["customer"], r, "rule_deleted"
                )
        self.metrics.fired.labels(events.LIMIT_CLEARED).inc(len(orphans))
        for r in await conn.fetch(queries.LIFTS_IN_FORCE):
            try:
                await fire.lift(self.redis, self.keys, r["tenant"], r["rule"], r)
            except UNREACHABLE:
                raise
            except Exception:
                self._failed("evaluator: lift skipped in this sweep", rule=r["rule"])
        return len(orphans)

    def _failed(self, message: str, **context: str) -> None:
        log.exception(message, extra=context)
        self.metrics.errors.inc()

    # -- touches ---------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(self.keys.alert_touches(), GROUP, id="0", mkstream=True)

    async def _handle(self, entries: list[tuple[Any, dict[bytes, bytes]]]) -> int:
        stream = self.keys.alert_touches()
        # Per customer: its touched meters and the earliest touch. A rule on the whole invoice
        # is then read once per customer and batch, not once per meter it folded.
        wanted: dict[tuple[str, str], tuple[set[str], int]] = {}
        for entry_id, fields in entries:
            ms = int(text(entry_id).partition("-")[0])
            for tenant, key, meter in touches.decode(fields.get(touches.FIELD, b"")):
                meters, first = wanted.setdefault((tenant, key), (set(), ms))
                meters.add(meter)
                wanted[(tenant, key)] = (meters, min(first, ms))
        enqueued = 0
        for (tenant, key), (meters, ms) in wanted.items():
            try:
                enqueued += await self.evaluate_touch(tenant, key, sorted(meters))
            except UNREACHABLE:
                raise  # the batch stays pending, and is evaluated again
            except Exception:
                # One customer's failure never holds the others back; the sweep evaluates it
                # again.
                self._failed(
                    "evaluator: touch skipped", tenant=tenant, key=key, meter=",".join(meters)
                )
            self.metrics.touch_lag.observe(max(time.time() - ms / 1000, 0.0))
        self.metrics.touches.inc(sum(len(meters) for meters, _ in wanted.values()))
        if entries:
            # Acknowledged only once evaluated: an evaluator dying before leaves them pending,
            # and another takes them over (claim_stale).
            await self.redis.xack(stream, GROUP, *[e for e, _ in entries])
        return enqueued

    async def read_touches(self, block_ms: int | None = TOUCH_BLOCK_MS) -> int:
        """One batch of touches (waiting up to `block_ms` for one); returns events enqueued."""
        stream = self.keys.alert_touches()
        reply: Any = await self.redis.xreadgroup(
            GROUP, self.consumer, {stream: ">"}, count=TOUCH_BATCH, block=block_ms
        )
        if not reply:
            return 0
        return await self._handle(reply[0][1])

    async def claim_stale(self) -> int:
        """Touches another evaluator read and never acknowledged (it died, or failed on them),
        page by page through the pending list; returns events enqueued. A touch delivered more
        than MAX_DELIVERIES times is acknowledged unevaluated (dead-lettered: logged, counted):
        one that crashes whoever evaluates it must not come back forever. The sweep covers it."""
        stream = self.keys.alert_touches()
        enqueued = 0
        cursor: Any = "0-0"
        while True:
            reply: Any = await self.redis.xautoclaim(
                stream, GROUP, self.consumer, CLAIM_IDLE_MS, start_id=cursor, count=TOUCH_BATCH
            )
            cursor = reply[0]
            # Entries trimmed from the stream come back without fields: nothing to evaluate.
            claimed = [e for e in reply[1] if e[1]]
            if claimed:
                dead = await self._over_delivered([e for e, _ in claimed])
                if dead:
                    log.error(
                        "evaluator: touches dead-lettered after %d deliveries",
                        MAX_DELIVERIES,
                        extra={"entries": [text(e) for e in dead]},
                    )
                    self.metrics.dead_lettered.inc(len(dead))
                    await self.redis.xack(stream, GROUP, *dead)
                enqueued += await self._handle([e for e in claimed if e[0] not in dead])
            if text(cursor) == "0-0":
                return enqueued

    async def _over_delivered(self, entry_ids: list[Any]) -> set[Any]:
        """Those of the claimed entries delivered more than MAX_DELIVERIES times (XPENDING)."""
        pending: Any = await self.redis.xpending_range(
            self.keys.alert_touches(),
            GROUP,
            min=min(entry_ids, key=_entry_order),
            max=max(entry_ids, key=_entry_order),
            count=len(entry_ids),
            consumername=self.consumer,
        )
        over = {text(p["message_id"]) for p in pending if p["times_delivered"] > MAX_DELIVERIES}
        return {e for e in entry_ids if text(e) in over}

    # -- the process -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Touches and sweeps until `stop`."""
        await self._retrying(stop, self.ensure_group, 1.0)
        tasks = [
            asyncio.create_task(self._loop(stop, self._touch_round, 0.0), name="touches"),
            asyncio.create_task(
                self._loop(stop, self._sweep_round, self.settings.evaluator_sweep_interval_s),
                name="sweep",
            ),
        ]
        try:
            await stop.wait()
        finally:
            await cancel_and_wait(*tasks)

    async def _touch_round(self) -> None:
        try:
            await self.read_touches()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the stream (a restart without persistence): the sweep covers what it
            # held; start over.
            await self.ensure_group()

    async def _sweep_round(self) -> None:
        # The takeover of stale touches on its own: its failure never keeps the sweep from running.
        try:
            await self.claim_stale()
        except Exception:
            self._failed("evaluator: taking over stale touches failed")
        await self.sweep()

    async def _retrying(self, stop: asyncio.Event, step: Any, pause_s: float) -> None:
        while not stop.is_set():
            try:
                await step()
                return
            except TRANSIENT:
                log.exception("evaluator: dependency unavailable; retrying")
                self.metrics.errors.inc()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause_s)

    async def _loop(self, stop: asyncio.Event, step: Any, interval_s: float) -> None:
        while not stop.is_set():
            pause_s = interval_s
            try:
                await step()
            except Exception:
                # Any failure, not only an unreachable dependency: a loop that ends would leave
                # the process looking healthy while it evaluates nothing.
                self._failed("evaluator round failed; retrying")
                pause_s = max(interval_s, 1.0)
            if pause_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause_s)
