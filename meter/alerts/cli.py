"""`meter alerts create|list|show|delete`: a tenant's usage alert rules, the same as the
/v1/alert_rules routes (docs/alerts.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from meter.config import Settings
from meter.errors import MeteringError


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("alerts", help="usage alert rules (docs/alerts.md)")
    sub = p.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    c = sub.add_parser("create", help="create a rule; prints it")
    c.add_argument("--tenant", required=True)
    c.add_argument(
        "--meter", help="the meter watched (required but for --kind amount: the whole invoice)"
    )
    c.add_argument("--kind", required=True, help="units, amount, percent_of_limit or projected")
    c.add_argument(
        "--thresholds", required=True, help="comma-separated, e.g. 50,80,100 (amount: minor units)"
    )
    c.add_argument("--customer", help="one customer (default: every customer of the tenant)")
    c.add_argument(
        "--hard-limit",
        action="store_true",
        help="block the meter in ingest for the rest of the period at the highest threshold",
    )
    for name, text in (("list", "list a tenant's rules"), ("show", "a rule and its states")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--tenant", required=True)
        if name == "show":
            s.add_argument("id")
    d = sub.add_parser("delete", help="delete a rule (its blocks are lifted)")
    d.add_argument("--tenant", required=True)
    d.add_argument("id")
    p.set_defaults(func=alerts_cmd)


def _print(doc: Any) -> None:
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())


async def _alerts(settings: Settings, args: argparse.Namespace) -> int:
    import asyncpg

    from meter.alerts import rules, store
    from meter.connections import redis_client
    from meter.redis_keys import Keys

    conn = await asyncpg.connect(settings.database_url)
    try:
        if args.alerts_command == "create":
            doc: dict[str, Any] = {
                "meter": args.meter,
                "kind": args.kind,
                "thresholds": [t.strip() for t in args.thresholds.split(",") if t.strip()],
                "customer": args.customer,
                "hard_limit": args.hard_limit,
            }
            _print(await store.create(conn, args.tenant, rules.parse_create(doc)))
        elif args.alerts_command == "list":
            for r in await store.list_rules(conn, args.tenant):
                print(
                    f"{r['id']}\t{r['customer'] or '*'}\t{r['meter'] or '(invoice)'}\t{r['kind']}\t"
                    f"{','.join(r['thresholds'])}\t{'hard_limit' if r['hard_limit'] else '-'}"
                )
        elif args.alerts_command == "show":
            rule = await store.get(conn, args.tenant, args.id)
            _print(
                rule
                | {"states": (await store.states(conn, args.tenant, args.id, None, 100))["data"]}
            )
        else:
            held = await store.delete(conn, args.tenant, args.id)
            redis = redis_client(settings.redis_url)
            try:
                await store.lift(redis, Keys(settings.redis_prefix), args.tenant, args.id, held)
            finally:
                await redis.aclose()
            print(f"deleted {args.id}")
    except MeteringError as exc:
        where = f" ({exc.param})" if exc.param else ""
        print(f"meter: {exc.message}{where}", file=sys.stderr)
        return 2
    finally:
        await conn.close()
    return 0


def alerts_cmd(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_alerts(settings, args))
