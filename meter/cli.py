"""The `meter` command: one entry point per process (see `meter --help`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import orjson

from meter import devenv, logs
from meter.config import Settings
from meter.errors import MeteringError


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def serve(settings: Settings, args: argparse.Namespace) -> int:
    from meter.serving import run_server, run_workers

    host, port = args.host or settings.host, args.port or settings.port
    workers = args.workers or settings.workers
    if workers > 1:
        return run_workers(settings, host, port, workers)
    run_server(settings, host, port)
    return 0


async def _migrate(settings: Settings) -> int:
    import asyncpg

    from meter.migrate import migrate

    conn = await asyncpg.connect(settings.database_url)
    try:
        done = await migrate(conn)
    finally:
        await conn.close()
    print(
        f"applied {len(done)} migration(s)" + "".join(f"\n  {m.version:04d}_{m.name}" for m in done)
    )
    return 0


def migrate_cmd(settings: Settings, args: argparse.Namespace) -> int:
    return _run(_migrate(settings))


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    import asyncpg

    from meter import auth, queries

    conn = await asyncpg.connect(settings.database_url)
    try:
        if args.keys_command == "create":
            key = await auth.create_key(conn, name=args.name, tenant=args.tenant)
            print(key)
            print(
                f"# API key {args.name!r} for tenant {args.tenant!r}; shown only this once",
                file=sys.stderr,
            )
            if args.tenant == settings.billing_default_tenant:
                print(
                    f"# {args.tenant!r} is the billing tenant (METER_BILLING_TENANT): this key "
                    "owns every Stripe customer whose metadata names no tenant",
                    file=sys.stderr,
                )
        elif args.keys_command == "list":
            for row in await conn.fetch(queries.LIST_API_KEYS):
                state = "revoked" if row["revoked_at"] else "active"
                print(f"{row['id']}\t{row['tenant']}\t{row['name']}\t{row['key_prefix']}…\t{state}")
        else:
            status = await conn.execute(queries.REVOKE_API_KEY, args.id)
            if status.endswith(" 0"):
                print(f"no active key with id {args.id}", file=sys.stderr)
                return 1
    finally:
        await conn.close()
    return 0


def keys_cmd(settings: Settings, args: argparse.Namespace) -> int:
    return _run(_keys(settings, args))


AGGREGATIONS = ("sum", "count", "max", "last", "unique_count")


async def _meters(settings: Settings, args: argparse.Namespace) -> int:
    import asyncpg

    from meter import queries

    if args.meters_command == "define":
        unique = args.unique_property
        if (args.aggregation == "unique_count") != (unique is not None):
            print("meter: --unique-property goes with --aggregation unique_count", file=sys.stderr)
            return 2
    if args.meters_command == "update":
        return await _update_meter(settings, args)
    if args.meters_command == "map":
        return await _map_price(settings, args)
    conn = await asyncpg.connect(settings.database_url)
    try:
        if args.meters_command == "define":
            await conn.execute(
                queries.DEFINE_METER, args.tenant, args.name, args.aggregation, unique
            )
            print(f"{args.tenant}\t{args.name}\t{args.aggregation}\tlocal")
        else:
            dims = await _dimensions_by_meter(conn, args.tenant)
            for r in await conn.fetch(queries.LIST_METERS, args.tenant):
                stripe = "-" if r["stripe_meter"] is None else f"{r['stripe_meter']}:{r['formula']}"
                if r["reportable"] is False:
                    stripe += " (not reportable: recreate it with formula sum)"
                tenant = r["tenant"] or "*"
                shown = dims.pop((r["tenant"], r["meter"]), "-") if r["tenant"] else "-"
                print(
                    f"{tenant}\t{r['meter']}\t{r['aggregation'] or '-'}\t{r['source']}\t{stripe}"
                    f"\t{shown}"
                )
            # Meters with dimensions but neither a local definition nor a Stripe meter.
            for (tenant, name), shown in sorted(dims.items()):
                print(f"{tenant}\t{name}\t-\t-\t-\t{shown}")
            for r in await conn.fetch(queries.ALL_PRICE_MAPPINGS, args.tenant):
                text = ",".join(f"{k}={v}" for k, v in sorted(orjson.loads(r["filter"]).items()))
                print(
                    f"{r['tenant']}\t{r['meter']}\t{text}\t→ {r['event_name']}\t{r['price'] or '-'}"
                )
    finally:
        await conn.close()
    return 0


async def _dimensions_by_meter(conn: Any, tenant: str | None) -> dict[tuple[str, str], str]:
    """(tenant, meter) → its dimensions as `meter meters list` shows them."""
    import datetime as dt

    from meter import dimensions, queries

    versions: dict[tuple[str, str], list[tuple[dt.datetime, list[str]]]] = {}
    for r in await conn.fetch(queries.DIMENSION_VERSIONS, tenant, None):
        versions.setdefault((r["tenant"], r["meter"]), []).append((r["effective_from"], r["keys"]))
    now = dt.datetime.now(dt.UTC)
    return {name: dimensions.describe(v, now) for name, v in versions.items()}


async def _map_price(settings: Settings, args: argparse.Namespace) -> int:
    """Add (or with --remove, drop) a price mapping: one combination filter → a Stripe meter."""
    import asyncpg

    from meter import dimensions, queries

    try:
        pairs = dimensions.parse_filter(args.filter)
    except MeteringError as exc:
        print(f"meter: {exc}", file=sys.stderr)
        return 2
    doc = orjson.dumps(dict(pairs)).decode()
    conn = await asyncpg.connect(settings.database_url)
    try:
        if args.remove:
            status = await conn.execute(queries.UNMAP_PRICE, args.tenant, args.name, doc)
            return 0 if status.endswith(" 1") else 1
        if not args.event_name or args.event_name == args.name:
            print(
                "meter: --event-name names the Stripe meter of the mapped price; it cannot be "
                "the meter's own (that one gets the unmapped usage)",
                file=sys.stderr,
            )
            return 2
        async with conn.transaction():
            held = await conn.fetch(queries.PRICE_MAPPINGS_OF, args.tenant, args.name)
            keys = {k for k, _ in pairs}
            for r in held:
                used = sorted(orjson.loads(r["filter"]))
                if set(used) != keys:
                    print(
                        "meter: every price mapping of a meter filters on the same keys (so a "
                        f"combination matches one); this meter's use {used}",
                        file=sys.stderr,
                    )
                    return 2
            await conn.execute(
                queries.MAP_PRICE, args.tenant, args.name, doc, args.event_name, args.price
            )
    finally:
        await conn.close()
    print(f"{args.tenant}\t{args.name}\t{args.filter}\t→ {args.event_name}\t{args.price or '-'}")
    return 0


async def _update_meter(settings: Settings, args: argparse.Namespace) -> int:
    import datetime as dt

    import asyncpg

    from meter import dimensions, queries

    now = dt.datetime.now(dt.UTC)
    try:
        keys = dimensions.parse_keys(args.dimensions)
        stated = args.effective_from
        when = now if stated is None else dt.datetime.fromisoformat(stated)
        dimensions.check_effective_from(when, now)
    except (MeteringError, ValueError) as exc:
        print(f"meter: {exc}", file=sys.stderr)
        return 2
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(queries.SET_DIMENSIONS, args.tenant, args.name, when, list(keys))
    finally:
        await conn.close()
    print(f"{args.tenant}\t{args.name}\t{','.join(keys) or '-'}\tfrom {when.isoformat()}")
    return 0


def meters_cmd(settings: Settings, args: argparse.Namespace) -> int:
    return _run(_meters(settings, args))


def dev_cmd(settings: Settings, args: argparse.Namespace) -> int:
    from meter.dev import run_dev

    return run_dev(settings, port=args.port, catalogue=args.catalogue)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meter", description="Usage metering and billing on Redis, Postgres and Stripe."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the HTTP API (ingest, health, metrics)")
    p.add_argument("--host", help="listen address (default METER_HOST)")
    p.add_argument("--port", type=int, help="listen port (default METER_PORT)")
    p.add_argument(
        "--workers", type=int, help="processes sharing the port, one per core (METER_WORKERS)"
    )
    p.set_defaults(func=serve)

    p = sub.add_parser("migrate", help="apply pending database migrations")
    p.set_defaults(func=migrate_cmd)

    p = sub.add_parser("keys", help="manage ingest API keys")
    keys_sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    k = keys_sub.add_parser("create", help="create a key; prints it once")
    k.add_argument("name")
    k.add_argument(
        "--tenant",
        required=True,
        help="tenant the key belongs to (required; 1..64 of A-Z a-z 0-9 _ . -). The billing "
        "tenant (METER_BILLING_TENANT, default `default`) owns every Stripe customer without "
        "tenant metadata: give a key that tenant only on purpose",
    )
    keys_sub.add_parser("list", help="list keys (never the secrets)")
    k = keys_sub.add_parser("revoke", help="revoke a key by id")
    k.add_argument("id", type=int)
    p.set_defaults(func=keys_cmd)

    p = sub.add_parser("meters", help="local meter definitions (what Stripe meters cannot say)")
    meters_sub = p.add_subparsers(dest="meters_command", required=True, metavar="ACTION")
    m = meters_sub.add_parser(
        "define",
        help="set how a tenant's meter aggregates; wins over the Stripe meter's formula "
        "(define it before its usage is reported: reported usage is not re-sent)",
    )
    m.add_argument("name", help="the meter (the events' `meter`, the Stripe event name)")
    m.add_argument("--aggregation", required=True, choices=AGGREGATIONS)
    m.add_argument("--unique-property", help="the property unique_count counts distinct values of")
    m.add_argument("--tenant", default="default", help="tenant the definition belongs to")
    m = meters_sub.add_parser(
        "update",
        help="set the property keys a meter's usage is broken down by, from a moment on "
        "(docs/dimensions.md); usage folded before it keeps its combination",
    )
    m.add_argument("name", help="the meter (the events' `meter`)")
    m.add_argument(
        "--dimensions",
        required=True,
        help="up to 3 property keys, comma-separated (e.g. model,region); empty: none",
    )
    m.add_argument(
        "--from",
        dest="effective_from",
        help="ISO 8601 time with zone the change applies from (default now; never the past)",
    )
    m.add_argument("--tenant", default="default", help="tenant the meter belongs to")
    m = meters_sub.add_parser(
        "map",
        help="price a combination of dimension values on its own: its usage goes to the Stripe "
        "meter of --event-name (docs/dimensions.md, Pricing per dimension)",
    )
    m.add_argument("name", help="the meter (the events' `meter`)")
    m.add_argument("--filter", required=True, help="dimension values, e.g. model=large")
    m.add_argument("--event-name", help="event name of the Stripe meter that feeds the price")
    m.add_argument("--price", help="the Stripe price (shown in `meters list`)")
    m.add_argument("--remove", action="store_true", help="drop the mapping of this filter")
    m.add_argument("--tenant", default="default", help="tenant the meter belongs to")
    m = meters_sub.add_parser(
        "list",
        help="meters with their aggregation (local definitions and Stripe meters) and dimensions",
    )
    m.add_argument("--tenant", help="only this tenant's local definitions")
    p.set_defaults(func=meters_cmd)

    from meter.alerts.cli import add_parser as add_alerts

    add_alerts(sub)

    from aggregator.cli import add_parser as add_aggregate

    add_aggregate(sub)

    from meter.billing.cli import add_parser as add_sync
    from meter.billing.cli import add_stripe_parser
    from meter.stripe_emulator.cli import add_parser as add_stripe_emulator

    add_sync(sub)

    from reporter.cli import add_parser as add_report

    add_report(sub)

    from notifier.cli import add_parser as add_notify

    add_notify(sub)

    from evaluator.cli import add_parser as add_evaluate

    add_evaluate(sub)

    add_stripe_parser(sub)
    add_stripe_emulator(sub)

    p = sub.add_parser(
        "dev", help="everything locally: embedded Postgres + Redis, migrations, the API"
    )
    p.add_argument("--port", type=int, help="API port (default METER_PORT)")
    p.add_argument(
        "--catalogue",
        type=Path,
        help="the catalogue the Stripe emulator is seeded with (default "
        "deploy/catalogue.example.yaml; format: docs/stripe-setup.md)",
    )
    # `meter dev` writes .meter/dev/env; it never reads one (nor a previous run's).
    p.set_defaults(func=dev_cmd, dev_env=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser().parse_args(argv))


def dispatch(args: argparse.Namespace) -> int:
    """Run a parsed command with settings and logs set up; errors become exit codes. Settings the
    environment leaves unset come from a running `meter dev`'s .meter/dev/env (meter/devenv.py)."""
    try:
        env = devenv.with_dev_env(os.environ) if getattr(args, "dev_env", True) else os.environ
        settings = Settings.from_env(env)
        logs.setup(settings.log_level, settings.log_format)
        func: Callable[[Settings, argparse.Namespace], int] = args.func
        return func(settings, args)
    except MeteringError as exc:
        print(f"meter: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
