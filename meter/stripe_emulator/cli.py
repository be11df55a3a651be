"""`meter stripe-emulator`: the subcommand, registered by `meter.cli` through `add_parser`."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from meter.config import Settings

if TYPE_CHECKING:
    from meter.stripe_emulator.core import EmulatorConfig


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `stripe-emulator` and its options on the `meter` command's subparsers."""
    parser = subparsers.add_parser(
        "stripe-emulator",
        help="run the local Stripe emulator (api and meter_events ports)",
        description="A local Stripe that the official SDK talks to unchanged.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111, help="api.stripe.com stand-in")
    parser.add_argument(
        "--meter-events-port", type=int, default=12112, help="meter-events.stripe.com stand-in"
    )
    parser.add_argument("--webhook-url", default=None, help="where to deliver signed events")
    parser.add_argument("--webhook-secret", default=None, help="whsec_… used to sign them")
    parser.add_argument("--state-file", type=Path, default=None, help="JSON file kept across runs")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    if args.webhook_url and not args.webhook_secret:
        raise SystemExit("--webhook-url needs --webhook-secret (whsec_…)")
    from meter.stripe_emulator.core import EmulatorConfig

    return EmulatorConfig(
        host=args.host,
        port=args.port,
        meter_events_port=args.meter_events_port,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        state_file=args.state_file,
    )


async def serve(config: EmulatorConfig) -> int:
    """Serve until cancelled (Ctrl-C)."""
    from meter.stripe_emulator.server import running_emulator

    async with running_emulator(config) as emu:
        print(f"stripe emulator: api {emu.api_base}  meter_events {emu.meter_events_base}")
        print(f"  STRIPE_API_BASE={emu.api_base} STRIPE_METER_EVENTS_BASE={emu.meter_events_base}")
        print("  any sk_test_… key works; control API under /_emulator/", flush=True)
        await asyncio.Event().wait()
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Runner for the subcommand (the emulator needs none of meter's settings)."""
    try:
        return asyncio.run(serve(config_from_args(args)))
    except KeyboardInterrupt:
        return 0
