"""`meter sync`: registered into the `meter` command by meter/cli.py via `add_parser`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from meter.billing.gateway import ORDER
from meter.config import Settings
from meter.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    """Add the `sync` command to an argparse subparsers object."""
    p = subparsers.add_parser(
        "sync",
        help="backfill customers, products, prices, meters, subscriptions, invoices from Stripe",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=ORDER,
        help="sync only this kind of object (repeatable; default: all)",
    )
    p.set_defaults(func=sync_cmd)


async def run_sync(settings: Settings, args: argparse.Namespace) -> int:
    import asyncpg

    from meter.billing import queries
    from meter.billing.backfill import sync
    from meter.billing.metrics import BillingMetrics
    from meter.billing.notify import LogNotifier
    from meter.billing.service import Billing
    from meter.billing.stripe_gateway import StripeGateway
    from meter.connections import close_pool
    from meter.wiring import usage_upkeep

    gateway = StripeGateway.from_settings(settings)
    if gateway is None:
        raise ConfigError("meter sync needs STRIPE_API_KEY")
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        billing = Billing(
            settings,
            pool,
            gateway,
            BillingMetrics(_registry()),
            LogNotifier(),
            usage_upkeep(settings.dimension_combinations),
        )
        async with billing.connection() as conn:
            counts, effects = await sync(
                conn,
                gateway,
                settings.billing_default_tenant,
                billing.upkeep,
                kinds=tuple(args.only) if args.only else ORDER,
            )
            effects.sweep = True  # usage waiting for any of these customers gets its items
            await billing.after_commit(conn, effects)
            mappings = await conn.fetch(queries.MAPPINGS_STRIPE_SIDE)
    finally:
        await close_pool(pool, "sync")
        await gateway.close()
    for kind, n in counts.items():
        print(f"{kind}: {n}")
    # Everything else is synced; a meter meter cannot report to is an error to fix in Stripe.
    for refusal in effects.refused_meters:
        print(f"error: {refusal}", file=sys.stderr)
    # Pricing per dimension (docs/dimensions.md): each mapped combination needs a Stripe meter
    # and price of its own, on the customers' subscriptions next to the meter's own price.
    for m in mappings:
        where = f"price mapping {m['tenant']}/{m['meter']} {m['filter']} → {m['event_name']}"
        if not m["has_meter"]:
            print(
                f"warning: {where}: no active Stripe meter with event name {m['event_name']!r}"
                " and formula sum: create one, a metered price on it, and add that price to"
                " the subscriptions next to the meter's own price",
                file=sys.stderr,
            )
        elif not m["has_price"]:
            print(
                f"warning: {where}: no active price on that Stripe meter: create one and add it"
                " to the subscriptions next to the meter's own price",
                file=sys.stderr,
            )
    return 1 if effects.refused_meters else 0


def _registry() -> Any:
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


def sync_cmd(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(run_sync(settings, args))


def add_stripe_parser(subparsers: Any) -> None:
    """Add `meter stripe setup` to an argparse subparsers object."""
    p = subparsers.add_parser("stripe", help="set up the Stripe account meter bills through")
    stripe_sub = p.add_subparsers(dest="stripe_command", required=True, metavar="ACTION")
    s = stripe_sub.add_parser(
        "setup",
        help="create or update the catalogue's meters, products, prices and webhook endpoint "
        "in Stripe (idempotent; test mode unless --live)",
    )
    s.add_argument("catalogue", help="the catalogue file (YAML; see docs/stripe-setup.md)")
    s.add_argument(
        "--webhook-url",
        help="the address of meter's POST /stripe/webhook (default: the catalogue's webhook.url)",
    )
    s.add_argument(
        "--live",
        action="store_true",
        help="allow a live-mode STRIPE_API_KEY (refused without it)",
    )
    s.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would change, change nothing",
    )
    s.set_defaults(func=stripe_setup_cmd)


async def run_stripe_setup(settings: Settings, args: argparse.Namespace) -> int:
    from meter.billing.catalogue import load
    from meter.billing.stripe_setup import setup_stripe

    # The whole file is checked before anything is sent: a bad one changes nothing.
    catalogue = load(args.catalogue)
    result = await setup_stripe(
        settings,
        catalogue,
        webhook_url=args.webhook_url,
        live=args.live,
        dry_run=args.dry_run,
    )
    for change in result.changes:
        print(change)
    new = [s for s in (result.signing_secret, result.destination_secret) if s]
    if len(new) == 2:
        print(
            "\nsigning secrets of the webhook endpoint and the event destination (shown once; "
            f"set STRIPE_WEBHOOK_SECRET to both, comma-separated):\n  {','.join(new)}"
        )
    elif new:
        what = "webhook endpoint" if result.signing_secret else "event destination"
        print(
            f"\nthe new {what}'s signing secret (shown once; STRIPE_WEBHOOK_SECRET lists every "
            f"secret, comma-separated: replace the {what}'s old one with it):\n  {new[0]}"
        )
    if not (args.webhook_url or catalogue.webhook_url):
        print("note: no webhook endpoint (give --webhook-url or webhook.url)", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for conflict in result.conflicts:
        print(f"error: {conflict}", file=sys.stderr)
    if not result.changed:
        print("Stripe already holds the catalogue: nothing changed")
    return 1 if result.conflicts else 0


def stripe_setup_cmd(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(run_stripe_setup(settings, args))
