"""`meter report`, `meter reconcile` and `meter usage void`, added to `meter` by `add_parser`."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
from typing import Any

from meter import wiring
from meter.config import Settings
from meter.signals import stop_on_signals

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Add the `report`, `reconcile` and `usage` commands to an argparse subparsers object."""
    p = subparsers.add_parser(
        "report", help="send rolled-up usage to Stripe Billing Meters, exactly once"
    )
    p.add_argument("--once", action="store_true", help="send everything pending, then exit")
    # Crash tests: `--fault after_send:2` kills the process (SIGKILL) at the 2nd such point.
    p.add_argument("--fault", action="append", default=[], help=argparse.SUPPRESS)
    p.set_defaults(func=report_cmd)
    r = subparsers.add_parser(
        "reconcile", help="compare usage sent with Stripe's meter event summaries; list drift"
    )
    r.add_argument("--days", type=float, default=40.0, help="look back this many days")
    r.set_defaults(func=reconcile_cmd)
    u = subparsers.add_parser("usage", help="corrections to accepted usage")
    usage_sub = u.add_subparsers(dest="action", required=True)
    v = usage_sub.add_parser(
        "void",
        help="void an accepted, aggregated event (sum/count meters); sent as a negative delta",
    )
    v.add_argument("--id", required=True, dest="event_id", help="the event's id")
    v.add_argument("--tenant", default="default", help="tenant the event belongs to")
    v.set_defaults(func=void_cmd)


async def report(settings: Settings, args: argparse.Namespace) -> int:
    """Run the reporter (or one pass with --once) until SIGTERM/SIGINT."""
    from meter.crashpoints import Faults
    from reporter.worker import Reporter

    async with Reporter(
        settings, faults=Faults.parse(args.fault), directory=wiring.customer_directory()
    ) as reporter:
        if args.once:
            sent = await reporter.once()
            print(f"reported {sent} outbox row(s)")
            return 0
        from meter.metrics import metrics_server

        port, registry = settings.reporter_metrics_port, reporter.metrics.registry
        with metrics_server(settings.metrics_host, port, registry):
            stop = stop_on_signals()
            log.info("reporter started", extra={"transport": settings.reporter_transport})
            await reporter.run(stop)
        return 0


async def reconcile_once(settings: Settings, args: argparse.Namespace) -> int:
    """Print every (customer, meter, period) that drifts; exit 1 if any does."""
    from reporter.worker import Reporter

    async with Reporter(settings, directory=wiring.customer_directory()) as reporter:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=args.days)
        compared, drift = await reporter.reconcile(since)
    for d in drift:
        print(
            f"{d.customer}\t{d.meter}\t{d.period_start.isoformat()}\t"
            f"ours={d.ours}\tstripe={d.stripe}\tdrift={d.delta}"
        )
    print(f"compared {compared} (customer, meter, period)s; {len(drift)} drift")
    return 1 if drift else 0


async def void(settings: Settings, args: argparse.Namespace) -> int:
    """Void one event; exit 0 also when it was voided before (nothing changes then)."""
    import asyncpg

    from reporter.voids import void_event

    conn = await asyncpg.connect(settings.database_url)
    try:
        voided = await void_event(conn, args.tenant, args.event_id, wiring.subtract_event())
    finally:
        await conn.close()
    if voided.already:
        print(f"event {args.event_id!r} was already voided; nothing changed")
    else:
        print(
            f"voided event {args.event_id!r}: {voided.value} taken out of meter "
            f"{voided.meter!r}; the reporter sends the negative delta"
        )
    return 0


def report_cmd(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(report(settings, args))


def reconcile_cmd(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(reconcile_once(settings, args))


def void_cmd(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(void(settings, args))
