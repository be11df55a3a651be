"""Claim → send → mark: outbox rows to Stripe, exactly once.

The numbered steps in `send_batch` say why a crash (kill -9) between any two neither loses a
meter event nor lets Stripe count it twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from meter.crashpoints import Faults
from reporter import queries
from reporter.backoff import backoff_delay
from reporter.directory import Conn, PeriodCalendar
from reporter.limiter import Limiter
from reporter.metrics import ReporterMetrics
from reporter.periods import bills_no_more, holding, is_closed, open_target, starting_at
from reporter.plan import (
    CUSTOMER_DELETED_USAGE,
    ITEM_GONE,
    TRIAL_USAGE,
    VOIDED_USAGE,
    carried_time,
)
from reporter.reconcile_math import MINUTE, SentRow, floor_minute, horizon_verdict, our_total
from reporter.summaries import StripeSummaries
from reporter.transport import Event, Transport

log = logging.getLogger(__name__)


# Crash-test points of this module (meter/crashpoints.py): after_claim, after_send (Stripe answered,
# nothing marked), after_mark (marked, not committed), after_commit.


@dataclass(frozen=True)
class SendPolicy:
    batch_size: int = 100
    max_attempts: int = 6  # tries within one claim before the rows are released for later
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    horizon: dt.timedelta = dt.timedelta(hours=20)


@dataclass
class Sender:
    pool: asyncpg.Pool
    transport: Transport
    limiter: Limiter
    metrics: ReporterMetrics
    summaries: StripeSummaries
    calendar: PeriodCalendar
    policy: SendPolicy = field(default_factory=SendPolicy)
    faults: Faults = field(default_factory=Faults)
    rng: random.Random = field(default_factory=random.Random)

    async def send_batch(self) -> int:
        """Claim, send and mark one batch; returns the rows claimed (0: nothing is due)."""
        size = min(self.policy.batch_size, self.transport.max_batch)
        async with self.pool.acquire() as conn, conn.transaction():
            # 1. Claim: lock the oldest due rows FOR UPDATE SKIP LOCKED, in a transaction held
            #    until they are marked. No other sender can claim them meanwhile; a crash ends
            #    the transaction, the locks go, and the rows are due again, unchanged.
            rows = await conn.fetch(queries.CLAIM, size)
            if not rows:
                return 0
            self.faults.hit("after_claim")
            events = [_event(r) for r in rows]
            # 2. Rows older than Stripe's dedupe horizon (created > 20 h ago, so any earlier try
            #    was too) may have been applied and forgotten: event_summaries decide before any
            #    resend (`_check_horizon`, which judges those rows only). Absolute values are safe
            #    to resend (Stripe keeps the last), so only deltas are checked.
            now = await conn.fetchval("SELECT now()")
            old = [
                e
                for e, r in zip(events, rows, strict=True)
                if not r["absolute"] and now - r["created_at"] > self.policy.horizon
            ]
            if old:
                events = await self._check_horizon(conn, events, old, now)
            # 2b. A row planned while its period was open may have waited (429s, an outage)
            #     until the period closed (its invoice may be final): `_place` handles it.
            #     i.   It is never sent with its old timestamp: it is moved into its item's open
            #          period on its meter (same identifier and value), parked `waiting` while
            #          none is known, or recorded `late` if absolute, of a trial or voided
            #          period, or of an item that bills its meter no more; in this transaction,
            #          so a move commits only with the outcome of the send that used it. A row
            #          of a deleted Stripe customer's item is recorded `late`, closed or not.
            #     ii.  An earlier try that Stripe applied carried the old timestamp and was made
            #          while the period was open: a claim sends only rows it found open, and its
            #          tries end within max_attempts × (timeout + backoff cap), ~4 min with the
            #          defaults, inside the 15 min the grace (45 min) leaves before Stripe
            #          finalizes (1 h). That invoice billed it; the moved resend has the same
            #          identifier and Stripe drops it (rows past the 24 h dedupe went through
            #          step 2 first, judged at their recorded timestamp, that of their last try).
            #     iii. A crash after the send and before the commit rolls the move back; the
            #          next claim moves the row again, to the same timestamp while that open
            #          period lasts (plan.carried_time), and Stripe drops the resend.
            events = await self._place(conn, rows, events, now)
            # 3. Send, retrying 429/5xx/no-answer with backoff, always with the same
            #    identifiers: a try that was applied but not answered is dropped by Stripe's
            #    dedupe when resent. Nothing in Postgres changes while we send.
            sent, failed, retry, error = await self._send(events)
            self.faults.hit("after_send")
            # 4. Mark, still inside the claim's transaction. A crash between 3 and the commit
            #    rolls the marks back: the rows are sent again with the same identifiers, and
            #    Stripe counts them once (≥ 24 h dedupe; older rows go through step 2).
            if sent:
                await conn.execute(queries.MARK_SENT, [e.id for e in sent])
            for message, ids in _by_message(failed).items():
                await conn.execute(queries.MARK_STATUS, ids, "failed", message)
            if retry:
                delay = backoff_delay(
                    self.policy.max_attempts,
                    base=self.policy.backoff_base_s,
                    cap=self.policy.backoff_cap_s,
                    rng=self.rng,
                )
                await conn.execute(queries.MARK_RETRY, [e.id for e in retry], delay, error)
            self.faults.hit("after_mark")
        # 5. Committed: the rows are sent (or failed, or due again later), durably.
        self.faults.hit("after_commit")
        self.metrics.events_sent.inc(len(sent))
        self.metrics.failed.inc(len(failed))
        if failed:
            log.error("meter events refused", extra={"count": len(failed), "error": error})
        return len(rows)

    async def _send(
        self, events: Sequence[Event]
    ) -> tuple[list[Event], list[tuple[Event, str]], list[Event], str | None]:
        sent: list[Event] = []
        failed: list[tuple[Event, str]] = []
        pending = list(events)
        error: str | None = None
        for attempt in range(self.policy.max_attempts):
            if not pending:
                break
            waited = await self.limiter.acquire(len(pending))
            self.metrics.limiter_wait_seconds.inc(waited)
            result = await self.transport.send(pending)
            sent += result.sent
            failed += result.failed
            pending = result.retry
            error = result.error or error
            if pending and attempt + 1 < self.policy.max_attempts:
                delay = backoff_delay(
                    attempt,
                    base=self.policy.backoff_base_s,
                    cap=self.policy.backoff_cap_s,
                    rng=self.rng,
                    retry_after=result.retry_after,
                )
                self.metrics.backoff_seconds.inc(delay)
                log.info(
                    "stripe retry",
                    extra={"events": len(pending), "delay_s": round(delay, 3), "error": error},
                )
                await asyncio.sleep(delay)
        return sent, failed, pending, error

    async def _check_horizon(
        self, conn: Conn, events: list[Event], old: list[Event], now: dt.datetime
    ) -> list[Event]:
        """Settle the rows past the horizon (`old`) by event_summaries, per (customer, meter,
        minute) window: applied → marked sent without a resend; missing → sent again; anything
        else → `review` (never guessed). Only `old` rows are judged:
          1. A fresh row (created inside the horizon) was tried, if ever, less than 24 h ago:
             Stripe still dedupes its identifier, so it is sent like any row, whatever its
             earlier tries did — never judged, never held with old ones.
          2. But an earlier try of a fresh row may already be in Stripe's total for its window
             without our knowing (a crash after the send and before the commit leaves even
             attempts = 0), so while a fresh row of the window is pending, that total cannot
             tell which old rows were applied: the old rows are deferred (retried later), and
             the fresh ones are sent and marked meanwhile, exactly once thanks to step 1.
          3. With no fresh row pending in the window, Stripe's total is our sent rows plus the
             old rows that were applied: `horizon_verdict` compares.
          4. Deferring ends: a fresh row is soon sent or failed, or past the horizon itself
             and then judged as an old one.
        """
        groups: dict[tuple[str, str, dt.datetime], list[Event]] = {}
        for e in old:
            key = (e.stripe_customer, e.event_name, floor_minute(e.event_time))
            groups.setdefault(key, []).append(e)
        settled: set[int] = set()
        deferred: list[int] = []
        for (customer, name, start), pending in groups.items():
            fresh = await conn.fetchval(
                queries.FRESH_PENDING_IN_WINDOW,
                customer,
                name,
                start,
                start + MINUTE,
                now - self.policy.horizon,
            )
            if fresh:
                deferred += [e.id for e in pending]
                self.metrics.horizon_checks.labels("deferred").inc()
                continue
            stripe_total = await self.summaries.total(name, customer, start, start + MINUTE)
            sent_rows = await conn.fetch(
                queries.SENT_IN_WINDOW, customer, name, start, start + MINUTE
            )
            ours = our_total(
                SentRow(r["value"], r["absolute"], r["event_time"], r["id"]) for r in sent_rows
            )
            verdict = (
                "review"
                if stripe_total is None or ours is None
                else horizon_verdict(stripe_total, ours, [e.value for e in pending])
            )
            self.metrics.horizon_checks.labels(verdict).inc()
            log.warning(
                "outbox rows past the dedupe horizon",
                extra={
                    "customer": customer,
                    "meter": name,
                    "rows": len(pending),
                    "verdict": verdict,
                },
            )
            ids = [e.id for e in pending]
            if verdict == "applied":
                await conn.execute(queries.MARK_SENT, ids)
                settled.update(ids)
            elif verdict == "review":
                await conn.execute(
                    queries.MARK_STATUS, ids, "review", "past the dedupe horizon: ambiguous"
                )
                settled.update(ids)
        if deferred:
            await conn.execute(
                queries.MARK_RETRY,
                deferred,
                self.policy.backoff_cap_s,
                "past the dedupe horizon: waits for fresh rows of its minute to be sent",
            )
            settled.update(deferred)
        return [e for e in events if e.id not in settled]

    async def _place(
        self, conn: Conn, rows: Sequence[asyncpg.Record], events: list[Event], now: dt.datetime
    ) -> list[Event]:
        """Events whose billing period is still open, as they are; the others moved into their
        item's open period (same identifier), or, with none known, parked as `waiting` (the
        build releases them); absolute ones recorded `late` (they cannot be carried)."""
        claimed = {r["id"]: r for r in rows}
        live = [claimed[e.id] for e in events]
        grace = self.calendar.grace
        periods = await self.calendar.periods(conn, {r["subscription_item"] for r in live})
        moved: dict[int, dt.datetime] = {}
        parked: list[int] = []
        late: list[int] = []
        trial: list[int] = []  # of a closed trial period: charged by nothing, so never moved
        gone: list[int] = []  # its item bills its meter no more: no period will take it
        voided: list[int] = []  # of a period whose invoice was voided: free, never moved
        deleted: list[int] = []  # of a deleted customer's item: billed by nothing, never sent
        for r in live:
            known = periods.get(r["subscription_item"], [])
            # A row not carried yet is in its bucket's period; a carried one in its target's.
            period = (
                starting_at(known, r["period_start"])
                if r["carried_from"] is None
                else holding(known, r["event_time"])
            )
            if period is not None and period.customer_deleted:
                deleted.append(r["id"])
                continue
            if period is None or not is_closed(period, now, grace):
                continue
            target = None if r["absolute"] else open_target(known, now, grace, r["event_name"])
            if period.trial:
                trial.append(r["id"])
            elif period.voided:
                voided.append(r["id"])
            elif r["absolute"]:
                late.append(r["id"])
            elif target is None and bills_no_more(known, r["event_name"]):
                gone.append(r["id"])
            elif target is None:
                parked.append(r["id"])
            else:
                moved[r["id"]] = carried_time(target, now)
        if moved:
            await conn.execute(queries.MOVE_ROWS, list(moved), list(moved.values()))
        if parked:
            await conn.execute(
                queries.PARK_ROWS, parked, "its period is invoiced; no open period known yet"
            )
        if late:
            await conn.execute(
                queries.MARK_STATUS, late, "late", "its period was invoiced before it was sent"
            )
        if trial:
            await conn.execute(queries.MARK_STATUS, trial, "late", TRIAL_USAGE)
        if gone:
            await conn.execute(queries.MARK_STATUS, gone, "late", ITEM_GONE)
        if voided:
            await conn.execute(queries.MARK_STATUS, voided, "late", VOIDED_USAGE)
        if deleted:
            await conn.execute(queries.MARK_STATUS, deleted, "late", CUSTOMER_DELETED_USAGE)
        self.metrics.late.labels("moved").inc(len(moved))
        self.metrics.late.labels("waiting").inc(len(parked))
        self.metrics.late.labels("recorded").inc(len(late))
        self.metrics.late.labels("trial").inc(len(trial))
        self.metrics.late.labels("gone").inc(len(gone))
        self.metrics.late.labels("voided").inc(len(voided))
        self.metrics.late.labels("customer_deleted").inc(len(deleted))
        if moved or parked or late or trial or gone or voided or deleted:
            log.warning(
                "outbox rows whose period was invoiced before they were sent",
                extra={
                    "moved": len(moved),
                    "waiting": len(parked),
                    "late": len(late),
                    "trial": len(trial),
                    "gone": len(gone),
                    "voided": len(voided),
                    "customer_deleted": len(deleted),
                },
            )
        dropped = set(parked) | set(late) | set(trial) | set(gone) | set(voided) | set(deleted)
        return [
            dataclasses.replace(e, event_time=moved[e.id]) if e.id in moved else e
            for e in events
            if e.id not in dropped
        ]


def _event(r: asyncpg.Record) -> Event:
    return Event(
        id=r["id"],
        identifier=r["identifier"],
        stripe_customer=r["stripe_customer"],
        event_name=r["event_name"],
        value=r["value"],
        event_time=r["event_time"],
    )


def _by_message(failed: Sequence[tuple[Event, str]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for e, message in failed:
        out.setdefault(message, []).append(e.id)
    return out
