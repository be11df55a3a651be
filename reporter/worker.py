"""The reporter process: build the outbox, send it with N concurrent lanes, reconcile."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from types import TracebackType

import asyncpg
import stripe

from meter.config import Settings, check_stripe_api_version
from meter.connections import PG_ERRORS, acquire, close_pool
from meter.crashpoints import Faults
from meter.errors import ConfigError
from meter.migrate import require_schema
from reporter import outbox, queries
from reporter.directory import BillingCalendar, CustomerDirectory, PeriodCalendar
from reporter.limiter import Limiter
from reporter.metrics import ReporterMetrics
from reporter.reconcile import reconcile
from reporter.reconcile_math import Drift
from reporter.send import Sender, SendPolicy
from reporter.summaries import StripeSummaries
from reporter.transport import StreamTransport, Transport, V1Transport, make_client

log = logging.getLogger(__name__)

# What a round may fail on and the next one get past: Postgres's errors, and Stripe's (the
# reconciliation reads Stripe).
ROUND_ERRORS: tuple[type[Exception], ...] = (*PG_ERRORS, stripe.StripeError)

# 90% of Stripe's live-mode limits, events per second.
DEFAULT_RATE = {"v2": 9000.0, "v1": 900.0}
# docs.stripe.com/billing/subscriptions/usage-based/configure-grace-period: up to 72 hours.
STRIPE_LONGEST_GRACE_S = 72 * 3600.0


class Reporter:
    """`async with Reporter(settings) as r: await r.once()` (or `await r.run(stop)`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        directory: CustomerDirectory,
        calendar: PeriodCalendar | None = None,
        metrics: ReporterMetrics | None = None,
        faults: Faults | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not settings.stripe_api_key:
            raise ConfigError("the reporter needs STRIPE_API_KEY")
        check_stripe_api_version(stripe.api_version)
        self.settings = settings
        # Resolves our ids and cus_ ids to Stripe's (billing's customers, meter/wiring.py).
        self.directory = directory
        if settings.reporter_invoice_grace_s > STRIPE_LONGEST_GRACE_S:
            log.warning(
                "METER_REPORTER_INVOICE_GRACE is longer than Stripe's longest finalization grace"
                " (72h): a period closes by time only after it, so late usage relies on the"
                " invoice webhooks to be carried, not sent into a finalized invoice",
                extra={"grace_s": settings.reporter_invoice_grace_s},
            )
        self.calendar = calendar or BillingCalendar(
            dt.timedelta(seconds=settings.reporter_invoice_grace_s)
        )
        self.metrics = metrics or ReporterMetrics()
        self._faults = faults or Faults()
        self._rng = rng or random.Random()
        self._pool: asyncpg.Pool | None = None
        self._transport: Transport | None = None
        self._sender: Sender | None = None
        self.summaries: StripeSummaries | None = None

    async def __aenter__(self) -> Reporter:
        s = self.settings
        lanes = s.reporter_concurrency
        self._pool = await asyncpg.create_pool(s.database_url, min_size=1, max_size=lanes + 1)
        try:
            async with acquire(self._pool) as conn:
                await require_schema(conn)
        except BaseException:
            await self._pool.close()
            raise
        client, http = make_client(
            s.stripe_api_key or "",
            s.stripe_api_base,
            s.stripe_meter_events_base,
            s.reporter_timeout_s,
        )
        if s.reporter_transport == "v1":
            self._transport = V1Transport(client, http, self.metrics)
        else:
            self._transport = StreamTransport(
                client, http, self.metrics, renew_before_s=s.reporter_session_renew_s
            )
        rate = s.reporter_rate_limit or DEFAULT_RATE[s.reporter_transport]
        burst = s.reporter_rate_burst or s.reporter_batch_size
        self.summaries = StripeSummaries(client)
        self._sender = Sender(
            pool=self._pool,
            transport=self._transport,
            limiter=Limiter(rate, burst),
            metrics=self.metrics,
            summaries=self.summaries,
            calendar=self.calendar,
            policy=SendPolicy(
                batch_size=s.reporter_batch_size,
                max_attempts=s.reporter_max_attempts,
                backoff_base_s=s.reporter_backoff_base_s,
                backoff_cap_s=s.reporter_backoff_cap_s,
                horizon=dt.timedelta(seconds=s.reporter_dedupe_horizon_s),
            ),
            faults=self._faults,
            rng=self._rng,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._transport is not None:
            await self._transport.close()
        if self._pool is not None:
            await close_pool(self._pool, "reporter")

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "use `async with Reporter(...)`"
        return self._pool

    async def build(self) -> outbox.BuildResult:
        """Turn grown buckets into outbox rows."""
        return await outbox.build(self.pool, self.directory, self.calendar, self.metrics)

    async def send_due(self) -> int:
        """Send every row due now with the configured number of lanes; returns rows claimed."""
        assert self._sender is not None
        sender = self._sender
        claimed = 0

        async def lane() -> None:
            nonlocal claimed
            while n := await sender.send_batch():
                claimed += n

        await asyncio.gather(*(lane() for _ in range(self.settings.reporter_concurrency)))
        await self.refresh_gauges()
        return claimed

    async def refresh_gauges(self) -> None:
        row = await self.pool.fetchrow(queries.OUTBOX_DEPTH)
        assert row is not None
        self.metrics.outbox_depth.set(row["depth"])
        self.metrics.outbox_oldest.set(float(row["oldest_s"]))

    async def pending(self) -> int:
        """Outbox rows not yet sent (due now or backing off)."""
        depth: int = await self.pool.fetchval(queries.PENDING_COUNT)
        return depth

    async def once(self) -> int:
        """Build, then send until nothing is pending (rows backing off are waited for)."""
        await self.build()
        sent = 0
        while True:
            sent += await self.send_due()
            if not await self.pending():
                return sent
            await asyncio.sleep(self.settings.reporter_poll_interval_s)

    async def reconcile(self, since: dt.datetime | None = None) -> tuple[int, list[Drift]]:
        assert self.summaries is not None
        since = since or dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
        return await reconcile(self.pool, self.summaries, self.metrics, since)

    async def run(self, stop: asyncio.Event) -> None:
        """Build and send until `stop`; reconcile on its interval."""
        interval = self.settings.reporter_reconcile_interval_s
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + interval
        while not stop.is_set():
            try:
                await self.build()
                claimed = await self.send_due()
                if interval and loop.time() >= next_reconcile:
                    next_reconcile = loop.time() + interval
                    await self.reconcile()
            except ROUND_ERRORS:
                log.exception("reporter round failed; retrying")
                claimed = 0
            if not claimed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.reporter_poll_interval_s)
