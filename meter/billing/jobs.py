"""Scheduled billing work (apscheduler in `meter serve`): dunning steps and billing gauges.

Dunning: invoice.payment_failed opened a `dunning` row (webhook); each run sends the reminders
that came due since, and restricts access once the grace period is over; invoice.paid closes the
row (webhook). Each row is locked with SKIP LOCKED while its notices go out, so several app
processes never send one reminder twice; a notice that fails to send leaves its row as it was,
and the next run sends it again (notices are at least once).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from decimal import Decimal

import asyncpg

from meter.billing import mrr, queries
from meter.billing.metrics import BillingMetrics
from meter.billing.notify import Notifier
from meter.billing.prices import price_from_row
from meter.billing.rules import dunning_due_steps, grace_over
from meter.billing.views import usage_in_period
from meter.pricing import Period, PricingError, round_minor

log = logging.getLogger(__name__)


def _unix(value: dt.datetime) -> int:
    return int(value.timestamp())


async def run_dunning(
    conn: asyncpg.Connection,
    notifier: Notifier,
    metrics: BillingMetrics,
    *,
    schedule: tuple[float, ...],
    grace_s: float,
    now: int,
) -> list[tuple[str, str]]:
    """One pass over open dunning at `now` (unix s); returns the (subscription, notice) sent."""
    sent: list[tuple[str, str]] = []
    async with conn.transaction():
        for row in await conn.fetch(queries.OPEN_DUNNING):
            if row["status"] not in ("past_due", "unpaid"):
                continue  # paid or ended; its invoice.paid / deletion closes or explains it
            failed = _unix(row["failed_at"])
            due = dunning_due_steps(failed, row["steps_sent"], schedule, now)
            restrict = row["restricted_at"] is None and grace_over(failed, grace_s, now)
            notices = [("payment_reminder", step) for step in due]
            if restrict:
                notices.append(("access_restricted", len(schedule)))
            done = 0
            for kind, step in notices:
                payload = {
                    "subscription": row["subscription"],
                    "customer": row["external_id"] or row["customer"],
                    "tenant": row["tenant"],
                    "invoice": row["invoice"],
                    "step": step,
                    "failed_at": failed,
                }
                try:
                    await notifier.send(kind, payload)
                except Exception:
                    log.exception("dunning notice not sent", extra={"kind": kind})
                    break
                metrics.dunning_notifications.labels(kind).inc()
                sent.append((row["subscription"], kind))
                done += 1
            steps_sent = row["steps_sent"] + min(done, len(due))
            restricted_now = restrict and done == len(notices)
            await conn.execute(
                queries.ADVANCE_DUNNING,
                row["subscription"],
                steps_sent,
                dt.datetime.fromtimestamp(now, dt.UTC) if restricted_now else None,
            )
    return sent


async def refresh_gauges(conn: asyncpg.Connection, metrics: BillingMetrics, now: int) -> None:
    """Subscriptions by status, MRR, payment success ratio, dunning states."""
    metrics.subscriptions.clear()
    for row in await conn.fetch(queries.SUBSCRIPTIONS_BY_STATUS):
        metrics.subscriptions.labels(row["status"]).set(row["n"])
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in await conn.fetch(queries.MRR_ITEMS):
        try:
            price = price_from_row(dict(row))
            if row["usage_type"] == "metered":
                period = Period(
                    _unix(row["current_period_start"]), _unix(row["current_period_end"])
                )
                amount = mrr.metered(price, await _usage(conn, row), period, now)
            else:
                amount = mrr.licensed(price, Decimal(row["quantity"] or 1))
        except (PricingError, ValueError, KeyError):
            log.warning("price left out of MRR", extra={"price": row["price"]}, exc_info=True)
            continue
        totals[row["currency"]] += amount
    metrics.mrr.clear()
    for currency, total in totals.items():
        metrics.mrr.labels(currency).set(round_minor(total))
    outcomes = await conn.fetchrow(queries.INVOICE_OUTCOMES)
    assert outcomes is not None
    if outcomes["attempted"]:
        metrics.payment_success_ratio.set(outcomes["paid"] / outcomes["attempted"])
    dunning = await conn.fetchrow(queries.OPEN_DUNNING_COUNTS)
    assert dunning is not None
    metrics.dunning.labels("grace").set(dunning["grace"])
    metrics.dunning.labels("restricted").set(dunning["restricted"])


async def _usage(conn: asyncpg.Connection, row: asyncpg.Record) -> Decimal:
    if row["event_name"] is None or row["current_period_start"] is None:
        return Decimal(0)
    return await usage_in_period(
        conn,
        row["tenant"],
        [row["external_id"], row["stripe_id"]],
        row["event_name"],
        row["current_period_start"],
        row["current_period_end"],
    )
