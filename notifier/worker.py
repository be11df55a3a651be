"""The notifier process: fan webhook events out to deliveries, send them signed, record each
attempt (docs/webhooks.md).

Crash-safe steps (order matters; `kill -9` anywhere is survived):
  1. fan-out — in one transaction: events not fanned out (each locked by one notifier, SKIP
     LOCKED) → one delivery row per subscribed, enabled endpoint (ON CONFLICT DO NOTHING), and
     the events marked fanned out. A crash before the commit leaves both as they were.
  2. claim — due deliveries, each by one notifier (FOR UPDATE SKIP LOCKED), committed with the
     attempt number and a lease covering the batch's sends; no transaction stays open while
     sending.
  3. send — one signed POST per claim, outside any transaction.
  4. record — in one transaction: the attempt's line, the delivery's state (succeeded, retry at,
     failed) fenced by the attempt number, the endpoint's failure streak (a 2xx ends it even
     when fenced off). Disabling an endpoint failing for long is a check of its own, before
     each claim.
A crash between 3 and 4 leaves the claim to run out; the delivery is sent again with the same
event id (at-least-once: receivers dedupe on `id`). Nothing is lost: a delivery leaves
`pending` only in step 4.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import aiohttp
import asyncpg
import orjson

from meter.config import Settings
from meter.connections import PG_ERRORS, acquire, close_pool
from meter.crashpoints import Faults
from meter.migrate import require_schema
from meter.webhooks import events, signing, store
from notifier import egress, schedule
from notifier.metrics import NotifierMetrics

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
FANOUT_BATCH = 500
PRUNE_BATCH = 1000
PRUNE_INTERVAL_S = 3600.0
# A claim outlives its batch's sends by this much (see `lease_seconds`).
LEASE_MARGIN_S = 30.0
USER_AGENT = "meter-webhooks/1"
SETTLE_POLL_S = 0.05
_MAX_ERROR_CHARS = 300
# What a round may fail on and the next one get past: Postgres restarting, unreachable or
# terminating a connection under the pool; a pool timeout (a TimeoutError, so an OSError).
TRANSIENT = PG_ERRORS


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def result(self) -> str:
        """The `attempts` metric's label."""
        if self.status_code is not None:
            return f"{self.status_code // 100}xx"
        return "timeout" if self.error == "timeout" else "error"


def lease_seconds(settings: Settings) -> float:
    """How long a claim holds its delivery: every send of its batch, `concurrency` at a time,
    each up to the timeout, and a margin. A claim never runs out while its POST may still be
    waiting or in flight, so two notifiers never send the same delivery at once."""
    waves = -(-settings.notifier_batch_size // settings.notifier_concurrency)
    return waves * settings.notifier_timeout_s + LEASE_MARGIN_S


def event_body(
    event_id: str, event_type: str, tenant: str, created: dt.datetime, data: str
) -> bytes:
    """The JSON POSTed: the event, shaped like Stripe's event object."""
    return orjson.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created": int(created.timestamp()),
            "tenant": tenant,
            "data": orjson.loads(data),
        }
    )


class Notifier:
    """`async with Notifier(settings) as n: await n.once()` (or `await n.run(stop)`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: NotifierMetrics | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or NotifierMetrics()
        self.clock = clock or _utcnow
        self._rng = rng or random.Random()
        self._faults = faults or Faults()
        self._pool: asyncpg.Pool | None = None
        self._http: aiohttp.ClientSession | None = None
        self._next_prune = 0.0  # loop time of the next retention run: at the first round

    async def __aenter__(self) -> Notifier:
        s = self.settings
        # A connection per concurrent send records its outcome without waiting for another's.
        self._pool = await asyncpg.create_pool(
            s.database_url, min_size=1, max_size=min(s.notifier_concurrency, 32) + 1
        )
        try:
            async with acquire(self._pool) as conn:
                await require_schema(conn)
        except BaseException:
            await self._pool.close()
            raise
        self._http = egress.session(
            private=s.notifier_private_urls,
            concurrency=s.notifier_concurrency,
            timeout_s=s.notifier_timeout_s,
            headers={"User-Agent": USER_AGENT},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.close()
        if self._pool is not None:
            await close_pool(self._pool, "notifier")

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "use `async with Notifier(...)`"
        return self._pool

    async def fan_out(self) -> int:
        """Step 1: events not fanned out yet → deliveries; returns events fanned out."""
        total = 0
        while True:
            async with acquire(self.pool) as conn:
                n = await store.fan_out_batch(conn, self.clock(), FANOUT_BATCH)
            if not n:  # none left, or another notifier is fanning out
                return total
            self.metrics.fanned_out.inc(n)
            total += n
            if n < FANOUT_BATCH:
                return total

    async def claim(self) -> list[asyncpg.Record]:
        """Step 2: a batch of due deliveries, leased for as long as sending them all may take."""
        s = self.settings
        async with acquire(self.pool) as conn:
            return await store.claim(conn, self.clock(), s.notifier_batch_size, lease_seconds(s))

    async def deliver_due(self) -> int:
        """Steps 2-4 for one batch of due deliveries; returns deliveries attempted."""
        s = self.settings
        await self.disable_failing()
        claimed = await self.claim()
        self._faults.hit("after_claim")
        if not claimed:
            return 0
        gate = asyncio.Semaphore(s.notifier_concurrency)

        async def one(row: asyncpg.Record) -> None:
            async with gate:
                await self.deliver(row)

        await asyncio.gather(*(one(r) for r in claimed))
        return len(claimed)

    async def deliver(self, row: asyncpg.Record) -> None:
        """Steps 3-4 for one claimed delivery."""
        started = self.clock()
        outcome = await self._send(row, started)
        self._faults.hit("after_send")
        await self._record(row, started, outcome)

    async def _send(self, row: asyncpg.Record, now: dt.datetime) -> Outcome:
        """Step 3: one POST; 2xx is success, anything else (redirects too) a failure."""
        assert self._http is not None
        if not self.settings.notifier_private_urls and egress.refused_outright(row["url"]):
            return Outcome(None, egress.REFUSED)
        body = event_body(
            row["event_id"], row["type"], row["tenant"], row["event_created"], row["data"]
        )
        headers = {
            "Content-Type": "application/json",
            signing.HEADER: signing.header(body, row["secrets"], int(now.timestamp())),
        }
        try:
            async with self._http.post(
                row["url"], data=body, headers=headers, allow_redirects=False
            ) as response:
                return Outcome(response.status, None)
        except TimeoutError:
            return Outcome(None, "timeout")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # aiohttp's text of a resolver's refusal loses its words: the refusal's own instead.
            refused = getattr(exc, "os_error", None)
            why = refused if isinstance(refused, egress.PrivateAddressRefused) else exc
            return Outcome(None, f"{type(why).__name__}: {why}"[:_MAX_ERROR_CHARS])

    async def _record(self, row: asyncpg.Record, started: dt.datetime, outcome: Outcome) -> None:
        """Step 4, in one transaction."""
        s = self.settings
        now = self.clock()
        self.metrics.attempts.labels(outcome.result).inc()
        error = outcome.error
        if error is None and not outcome.ok:
            error = f"HTTP {outcome.status_code}"
        delivery, attempt, endpoint = row["id"], row["attempts"], row["endpoint_id"]
        async with acquire(self.pool) as conn, conn.transaction():
            await store.record_attempt(
                conn, delivery, attempt, started, now, outcome.status_code, error
            )
            if outcome.ok:
                # The endpoint answered, so its failure streak ends even when a newer claim
                # owns the delivery's state.
                await store.endpoint_succeeded(conn, endpoint)
                if await store.delivered(conn, delivery, attempt, now):
                    self.metrics.deliveries.labels("succeeded").inc()
                    # Clamped: the event's time is Postgres's, `now` this host's.
                    latency = (now - row["event_created"]).total_seconds()
                    self.metrics.latency.observe(max(0.0, latency))
                return
            retry_at = schedule.next_attempt(
                now,
                row["retry_from"],
                attempt,
                base=s.notifier_backoff_base_s,
                cap=s.notifier_backoff_cap_s,
                retry_for=s.notifier_retry_for_s,
                rng=self._rng,
            )
            if not await store.retry_or_fail(conn, delivery, attempt, retry_at):
                return  # a newer claim owns the delivery, or it is gone
            if retry_at is None:
                self.metrics.deliveries.labels("failed").inc()
            await store.endpoint_failed(conn, endpoint, now)

    async def disable_failing(self) -> int:
        """Disable the endpoints whose every attempt failed for long enough (docs/webhooks.md);
        returns how many. Run before each claim: the rule holds when the time comes, also for
        an endpoint with no attempt left to fail."""
        s = self.settings
        async with acquire(self.pool) as conn:
            rows = await store.disable_failing(
                conn, self.clock(), s.notifier_disable_after_s, s.notifier_disable_min_failures
            )
        for row in rows:
            self.metrics.disablings.inc()
            log.warning(
                "webhook endpoint disabled: every delivery to it failed for too long; it gets "
                "no deliveries until its tenant enables it again",
                extra={
                    "endpoint": row["id"],
                    "tenant": row["tenant"],
                    "url": row["url"],
                    "reason": row["disabled_reason"],
                },
            )
        return len(rows)

    async def refresh_gauges(self) -> None:
        async with acquire(self.pool) as conn:
            row = await store.queue_gauges(conn, self.clock())
        self.metrics.pending.set(row["pending"])
        self.metrics.oldest_pending.set(float(row["oldest_s"]))
        self.metrics.unfanned.set(row["unfanned"])
        self.metrics.endpoints_disabled.set(row["disabled"])

    async def round(self) -> int:
        """Fan out, then deliver every batch due now; returns deliveries attempted. Retention
        runs every PRUNE_INTERVAL_S."""
        await self.fan_out()
        attempted = await self._deliver_all()
        if self.settings.notifier_retention_s:
            now = asyncio.get_running_loop().time()
            if now >= self._next_prune:
                await self.prune()
                self._next_prune = now + PRUNE_INTERVAL_S
        return attempted

    async def prune(self) -> tuple[int, int]:
        """Delete finished deliveries, then events no delivery names, made more than the
        retention ago; returns (deliveries, events). A batch per transaction: no long lock."""
        before = self.clock() - dt.timedelta(seconds=self.settings.notifier_retention_s)
        counts = []
        for table, step in (
            ("webhook_deliveries", store.prune_deliveries),
            ("webhook_events", events.prune),
        ):
            total = 0
            while True:
                async with acquire(self.pool) as conn:
                    n = await step(conn, before, PRUNE_BATCH)
                total += n
                if n < PRUNE_BATCH:
                    break
            self.metrics.pruned.labels(table).inc(total)
            counts.append(total)
        return counts[0], counts[1]

    async def _deliver_all(self) -> int:
        attempted = 0
        while n := await self.deliver_due():
            attempted += n
        await self.refresh_gauges()
        return attempted

    async def once(self, settle_s: float = 10.0) -> int:
        """Fan out the events committed so far, then deliver what is due now (deliveries
        backing off are left for later); returns deliveries attempted. Events another notifier
        holds while fanning them out are waited for, up to `settle_s`, so that `--once` does
        not leave behind what was enqueued just before it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settle_s
        while True:
            await self.fan_out()
            async with acquire(self.pool) as conn:
                left = await store.events_not_fanned_out(conn)
            if not left or loop.time() >= deadline:
                break
            await asyncio.sleep(SETTLE_POLL_S)
        return await self._deliver_all()

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until `stop`, pausing when nothing was due."""
        while not stop.is_set():
            try:
                attempted = await self.round()
            except TRANSIENT:
                log.exception("notifier round failed; retrying")
                self.metrics.errors.inc()
                attempted = 0
            if not attempted:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.notifier_poll_interval_s)
