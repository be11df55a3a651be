"""The billing module's dependencies, built once per app and held under one AppKey."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from meter.billing.errors import BillingNotConfigured
from meter.billing.gateway import Obj, PaymentGateway
from meter.billing.metrics import BillingMetrics
from meter.billing.notify import Notifier
from meter.billing.store import Effects
from meter.config import Settings
from meter.connections import PG_ERRORS, acquire
from meter.core.ports import UsageUpkeep
from meter.core.windows import retention_cutoff

log = logging.getLogger(__name__)


@dataclass
class Billing:
    settings: Settings
    pool: asyncpg.Pool
    gateway_or_none: PaymentGateway | None
    metrics: BillingMetrics
    notifier: Notifier
    # The aggregator's work when billing data moves folded usage (wired by the process).
    upkeep: UsageUpkeep

    @property
    def gateway(self) -> PaymentGateway:
        if self.gateway_or_none is None:
            raise BillingNotConfigured("billing is not configured (STRIPE_API_KEY is unset)")
        return self.gateway_or_none

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection (typed as one: the pool's proxy forwards everything)."""
        async with acquire(self.pool) as conn:
            yield conn

    async def refetch(self, kind: str, id_: str) -> Obj | None:
        return await self.gateway.retrieve(kind, id_)

    def since(self) -> dt.datetime:
        """The oldest usage re-attribution looks at: the start of raw-log retention."""
        day = retention_cutoff(int(time.time() * 1000), self.settings.raw_retention_s)
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)

    async def after_commit(self, conn: asyncpg.Connection, effects: Effects) -> None:
        """Metrics and re-attribution once a write is committed. A failure here loses nothing:
        the aggregator's periodic sweep re-attributes whatever this missed."""
        if effects.churned:
            self.metrics.churned.inc(effects.churned)
        for outcome in effects.payments:
            self.metrics.invoice_payments.labels(outcome).inc()
        try:
            if effects.sweep:
                await self.upkeep.sweep(conn, self.since())
            for tenant, key in sorted(effects.reattribute):
                await self.upkeep.reattribute(conn, tenant, key, self.since())
        except PG_ERRORS:
            log.exception("re-attribution after a billing change failed; the sweep will retry")
