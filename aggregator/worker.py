"""The aggregator worker: leases shards, flushes them in a loop, runs the scheduled jobs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import cast

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

from aggregator import queries
from aggregator.attribution import Attributor
from aggregator.dimensions import GuardSet
from aggregator.flush import CheckpointMoved, FlushResult, flush_shard
from aggregator.leases import Leases
from aggregator.maintenance import run_maintenance
from aggregator.metrics import AggregatorMetrics
from aggregator.reattribute import Reattributed, sweep
from aggregator.windows import retention_cutoff, to_datetime
from meter.config import Settings
from meter.connections import PG_ERRORS, REDIS_ERRORS, RedisClient
from meter.core.streams import stream_id_key, text
from meter.crashpoints import Faults
from meter.migrate import require_schema
from meter.redis_keys import Keys

log = logging.getLogger(__name__)

# Errors a worker survives by waiting and reconnecting.
TRANSIENT: tuple[type[Exception], ...] = (
    *PG_ERRORS,
    *REDIS_ERRORS,  # in a cluster, also the slot-map errors of a failover
)
SWEEP_INTERVAL_S = 300.0
MAINTENANCE_INTERVAL_S = 3600.0


class Worker:
    """One aggregator process. Use as `async with Worker(...) as w:` then `run` or `drain`."""

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        *,
        attributor: Attributor,
        metrics: AggregatorMetrics | None = None,
        faults: Faults | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = Keys(settings.redis_prefix)
        # Which item and period bill an event (billing's tables, chosen by meter/wiring.py).
        self.attributor = attributor
        self.metrics = metrics or AggregatorMetrics()
        # Shards whose lag gauges this worker has set (and so must remove when it lets go).
        self._lag_reported: set[int] = set()
        self.faults = faults or Faults()
        self.batch_size = batch_size or settings.aggregator_batch_size
        self.known_days: set[dt.date] = set()
        # Dimension combinations known admitted (committed), shared by this worker's lanes.
        self.admitted_combos: set[tuple[GuardSet, str]] = set()
        # One flush connection per lane (see flush_all); lane 0 is the one `flush` uses.
        self._conns: list[asyncpg.Connection | None] = [None] * settings.aggregator_lanes
        self._leases: Leases | None = None
        # The lease connection is shared by concurrent lanes (a lane releases a shard whose
        # checkpoint moved); asyncpg runs one query at a time per connection.
        self._lease_lock = asyncio.Lock()
        # The shards the last drain() took (`--processes` reports them): each drained, unless
        # its checkpoint moved under us (another worker's), and then released.
        self.drained: list[int] = []

    async def __aenter__(self) -> Worker:
        await self._connect_leases()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def leases(self) -> Leases:
        assert self._leases is not None, "use the worker inside `async with`"
        return self._leases

    async def _connect_leases(self) -> None:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            await require_schema(conn)
        except BaseException:
            await conn.close()
            raise
        self._leases = Leases(conn, self.settings.redis_prefix, self.settings.shards)
        await self._leases.join()

    async def _flush_conn(self, lane: int = 0) -> asyncpg.Connection:
        conn = self._conns[lane]
        if conn is None or conn.is_closed():
            conn = await asyncpg.connect(self.settings.database_url)
            await conn.execute(queries.CREATE_BATCH_TABLE)
            async with conn.transaction():
                await conn.execute(queries.PRIME_BATCH_TABLE)
            self._conns[lane] = conn
        return conn

    async def close(self) -> None:
        for conn in (*self._conns, self._leases.conn if self._leases else None):
            if conn is not None and not conn.is_closed():
                await conn.close()

    async def flush(self, shard: int, lane: int = 0) -> FlushResult:
        """One batch of one shard, with metrics, on the lane's connection."""
        started = time.perf_counter()
        try:
            result = await flush_shard(
                await self._flush_conn(lane),
                self.redis,
                self.keys,
                shard,
                batch_size=self.batch_size,
                attributor=self.attributor,
                known_days=self.known_days,
                faults=self.faults,
                raw_log=self.settings.raw_log,
                dimension_limit=self.settings.dimension_combinations,
                admitted_combos=self.admitted_combos,
            )
        except CheckpointMoved:
            self.metrics.checkpoint_conflicts.inc()
            log.warning("checkpoint moved under us; shard released", extra={"shard": shard})
            async with self._lease_lock:
                await self.leases.release(shard)
            self._forget_released_shards()
            return FlushResult()
        label = str(shard)
        m = self.metrics
        if result.read:
            m.flush_seconds.observe(time.perf_counter() - started)
            m.batch_events.observe(result.read)
            m.events.labels(label).inc(result.inserted)
            m.duplicates.labels(label).inc(result.duplicates)
            if result.other:
                m.dimension_overflow.inc(result.other)
        oldest = result.oldest_ms
        m.lag_seconds.labels(label).set(
            0 if oldest is None else max(time.time() - oldest / 1000, 0)
        )
        m.lag_entries.labels(label).set(await self.redis.xlen(self.keys.stream(shard)))
        self._lag_reported.add(shard)
        return result

    def _forget_released_shards(self) -> None:
        """Drop the lag series of shards this worker no longer holds: their lag is now the new
        holder's to report, and a frozen last value here would keep an alert firing (or hide a
        real lag behind a stale zero) for as long as this process lives."""
        for shard in sorted(self._lag_reported - self.leases.held):
            self.metrics.lag_seconds.remove(str(shard))
            self.metrics.lag_entries.remove(str(shard))
            self._lag_reported.discard(shard)

    async def drain(self, part: tuple[int, int] = (0, 1)) -> int:
        """`--once`: take every free shard, fold what each stream holds now, give them back.
        Returns the number of events folded. Shards other workers hold are theirs to drain.
        `part=(i, n)`: only the shards ≡ i (mod n), for the i-th of n draining processes."""
        index, parts = part
        mine = [s for s in range(self.settings.shards) if s % parts == index]
        await self.leases.acquire_all_free(mine)
        self.metrics.leases.set(len(self.leases.held))
        skipped = sorted(set(mine) - self.leases.held)
        if skipped:
            log.info("shards held by other workers, skipped", extra={"shards": skipped})
        todo = sorted(self.leases.held)
        self.drained = list(todo)
        total = 0

        async def lane(n: int) -> None:
            nonlocal total
            while todo:
                shard = todo.pop(0)
                folded = await self._drain_shard(shard, n)  # not `total += await`: a lost update
                total += folded
                async with self._lease_lock:
                    await self.leases.release(shard)

        await self._lanes(lane)
        self._forget_released_shards()
        return total

    async def _drain_shard(self, shard: int, lane: int) -> int:
        """Flush one shard until it is past what its stream held when we started."""
        last = cast(
            "list[tuple[bytes, object]]",
            await self.redis.xrevrange(self.keys.stream(shard), count=1),
        )
        if not last:
            return 0
        end = stream_id_key(text(last[0][0]))
        total = 0
        while True:
            result = await self.flush(shard, lane)
            total += result.inserted
            if not result.read or result.last_id is None:
                return total
            if stream_id_key(result.last_id) >= end:
                return total

    async def flush_all(self, shards: list[int]) -> list[FlushResult]:
        """One batch of each shard, up to `aggregator_lanes` shards at once.

        Optimisation: a flush alternates between Python (decode, attribute, fold) and waiting on
        Postgres; with one connection per lane, one shard's Python work runs while another's
        statements run in Postgres, so on two cores both stay busy. Exactly-once is per shard
        and unchanged: a shard is in one lane only, and buckets shared by two lanes' batches are
        upserted in the one global key order (fold.sorted_buckets), so they wait, never deadlock.
        """
        todo = list(shards)
        results: dict[int, FlushResult] = {}

        async def lane(n: int) -> None:
            while todo:
                shard = todo.pop(0)
                results[shard] = await self.flush(shard, n)

        await self._lanes(lane)
        return [results[s] for s in shards]

    async def _lanes(self, lane: Callable[[int], Awaitable[None]]) -> None:
        """Run every lane to its end, then raise the first failure: a failed lane never leaves
        another one running on a connection the caller may reuse or retry on."""
        outcomes = await asyncio.gather(
            *(lane(n) for n in range(self.settings.aggregator_lanes)), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def tick(self) -> None:
        """Renew, balance and take over leases."""
        if not await self.leases.alive():
            log.warning("lease connection lost; reconnecting")
            await self._connect_leases()
        await self.leases.rebalance()
        self.metrics.leases.set(len(self.leases.held))
        self._forget_released_shards()

    async def run(self, stop: asyncio.Event, *, scheduled_jobs: bool = True) -> None:
        """Work until `stop` is set."""
        scheduler = self._scheduler() if scheduled_jobs else None
        if scheduler is not None:
            scheduler.start()
        loop = asyncio.get_running_loop()
        next_tick = 0.0
        try:
            while not stop.is_set():
                try:
                    if loop.time() >= next_tick:
                        await self.tick()
                        next_tick = loop.time() + self.settings.aggregator_lease_interval_s
                    results = await self.flush_all(sorted(self.leases.held))
                    busy = any(r.read >= self.batch_size for r in results)
                except TRANSIENT:
                    log.exception("aggregator loop failed; retrying")
                    busy = False
                if not busy:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            stop.wait(), self.settings.aggregator_poll_interval_s
                        )
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=False)

    def _scheduler(self) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(timezone=dt.UTC)
        now = dt.datetime.now(dt.UTC)
        scheduler.add_job(
            self._maintenance, "interval", seconds=MAINTENANCE_INTERVAL_S, next_run_time=now
        )
        scheduler.add_job(self._sweep, "interval", seconds=SWEEP_INTERVAL_S)
        return scheduler

    async def _maintenance(self) -> None:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            await run_maintenance(conn, self.settings)
        except TRANSIENT:
            log.exception("raw-log maintenance failed")
        finally:
            await conn.close()

    async def _sweep(self) -> None:
        since = retention_cutoff(int(time.time() * 1000), self.settings.raw_retention_s)
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            done = Reattributed()
            await sweep(
                conn,
                self.attributor,
                to_datetime(_day_ms(since)),
                done,
                dimension_limit=self.settings.dimension_combinations,
            )
            self.metrics.stuck_buckets.set(done.stuck)
        except TRANSIENT:
            log.exception("re-attribution sweep failed")
        finally:
            await conn.close()


def _day_ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1000
