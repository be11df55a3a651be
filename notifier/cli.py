"""`meter notify` and `meter webhooks …`, added to `meter` by `add_parser`."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
from typing import Any

from meter.config import Settings
from meter.errors import MeteringError
from meter.signals import stop_on_signals

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Add the `notify` and `webhooks` commands to an argparse subparsers object."""
    p = subparsers.add_parser(
        "notify", help="deliver outgoing webhooks, signed, at least once (docs/webhooks.md)"
    )
    p.add_argument("--once", action="store_true", help="deliver what is due now, then exit")
    # Crash tests: `--fault after_send:1` kills the process (SIGKILL) at the 1st such point.
    p.add_argument("--fault", action="append", default=[], help=argparse.SUPPRESS)
    p.set_defaults(func=notify_cmd)

    w = subparsers.add_parser("webhooks", help="a tenant's webhook endpoints and deliveries")
    sub = w.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    c = sub.add_parser("create", help="add an endpoint; prints its signing secret once")
    c.add_argument("url", help="http:// or https:// URL the events are POSTed to")
    c.add_argument(
        "--events",
        required=True,
        help="comma-separated event types (e.g. usage.limit_reached,usage.limit_cleared), or *",
    )
    c = sub.add_parser("list", help="endpoints (never their secrets)")
    c.add_argument("--tenant", help="only this tenant's (default: every tenant's)")
    c = sub.add_parser("rotate", help="a new signing secret; the old one signs too for a while")
    c.add_argument("id")
    c.add_argument(
        "--expires-in",
        type=int,
        help="seconds the previous secret keeps signing (default 86400, at most 7 days)",
    )
    for action, text in (
        ("disable", "stop deliveries to an endpoint"),
        ("enable", "resume deliveries to an endpoint (also one disabled for failing)"),
        ("delete", "delete an endpoint with its deliveries"),
    ):
        c = sub.add_parser(action, help=text)
        c.add_argument("id")
    c = sub.add_parser("deliveries", help="an endpoint's deliveries with their attempts")
    c.add_argument("id")
    c.add_argument("--limit", type=int, default=20)
    c.add_argument("--status", choices=("pending", "succeeded", "failed"))
    c = sub.add_parser("redeliver", help="send a delivery again (a fresh retry window)")
    c.add_argument("id", help="the endpoint")
    c.add_argument("delivery", help="the delivery (whd_…)")
    for parser in sub.choices.values():
        if parser.prog.split()[-1] != "list":
            parser.add_argument("--tenant", required=True, help="tenant the endpoint belongs to")
    w.set_defaults(func=webhooks_cmd)


async def notify(settings: Settings, args: argparse.Namespace) -> int:
    """Run the notifier (or one round with --once) until SIGTERM/SIGINT."""
    from meter.crashpoints import Faults
    from notifier.worker import Notifier

    async with Notifier(settings, faults=Faults.parse(args.fault)) as notifier:
        if args.once:
            attempted = await notifier.once()
            print(f"attempted {attempted} delivery(ies)")
            return 0
        from meter.metrics import metrics_server

        port, registry = settings.notifier_metrics_port, notifier.metrics.registry
        with metrics_server(settings.metrics_host, port, registry):
            stop = stop_on_signals()
            log.info("notifier started")
            await notifier.run(stop)
        return 0


def _unix(value: int | None) -> str:
    if value is None:
        return "-"
    return dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds")


async def webhooks(settings: Settings, args: argparse.Namespace) -> int:
    import asyncpg

    from meter.webhooks import endpoints, queries, store

    now = dt.datetime.now(dt.UTC)
    action = args.webhooks_command
    conn = await asyncpg.connect(settings.database_url)
    try:
        if action == "create":
            url = endpoints.check_url(args.url, allow_private=settings.notifier_private_urls)
            types = endpoints.check_event_types([t.strip() for t in args.events.split(",")])
            row, secret = await store.create(conn, args.tenant, url, types, now)
            print(f"{row['id']}\t{row['url']}\t{','.join(types)}")
            print(secret)
            print("# the signing secret, shown only this once", file=sys.stderr)
            return 0
        if action == "list":
            for r in await conn.fetch(queries.LIST_ALL_ENDPOINTS, args.tenant):
                reason = f" ({r['disabled_reason']})" if r["disabled_reason"] else ""
                print(
                    f"{r['id']}\t{r['tenant']}\t{r['url']}\t{','.join(r['enabled_events'])}"
                    f"\t{r['status']}{reason}"
                )
            return 0
        if action == "rotate":
            overlap = endpoints.check_overlap(args.expires_in)
            rotated = await store.rotate(conn, args.tenant, args.id, overlap, now)
            if rotated is None:
                return _missing(args.id)
            print(rotated.secret)
            print(
                "# the new signing secret, shown only this once; the previous one signs too "
                f"until {rotated.previous_expires.isoformat(timespec='seconds')}",
                file=sys.stderr,
            )
            return 0
        if action in ("disable", "enable"):
            disabling = action == "disable"
            updated = await store.update(
                conn,
                args.tenant,
                args.id,
                disabled=disabling,
                reason="disabled with `meter webhooks disable`" if disabling else None,
            )
            if updated is None:
                return _missing(args.id)
            print(f"{updated['id']}\t{updated['status']}")
            return 0
        if action == "delete":
            return 0 if await store.delete(conn, args.tenant, args.id) else _missing(args.id)
        if action == "redeliver":
            if not await store.redeliver(conn, args.tenant, args.id, args.delivery, now):
                print(f"meter: no delivery {args.delivery!r} of {args.id!r}", file=sys.stderr)
                return 1
            print(f"{args.delivery}\tpending")
            return 0
        # deliveries
        if await conn.fetchrow(queries.GET_ENDPOINT, args.tenant, args.id) is None:
            return _missing(args.id)
        rows = await store.deliveries(
            conn, args.tenant, args.id, limit=args.limit, status=args.status
        )
        for r in rows:
            doc = store.delivery_doc(r)
            print(
                f"{doc['id']}\t{doc['event']['id']}\t{doc['event']['type']}\t{doc['status']}"
                f"\tattempts={doc['attempts']}\tnext={_unix(doc['next_attempt'])}"
            )
            for a in doc["attempt_log"]:
                code = a["status_code"] if a["status_code"] is not None else "-"
                print(f"  #{a['attempt']}\t{_unix(a['started'])}\t{code}\t{a['error'] or ''}")
        return 0
    except MeteringError as exc:
        print(f"meter: {exc.message}", file=sys.stderr)
        return 2
    finally:
        await conn.close()


def _missing(endpoint_id: str) -> int:
    print(f"meter: no webhook endpoint {endpoint_id!r} for this tenant", file=sys.stderr)
    return 1


def notify_cmd(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(notify(settings, args))


def webhooks_cmd(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(webhooks(settings, args))
