"""`meter evaluate [--once]`: the alert evaluator, added to `meter` by `add_parser`."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from meter.config import Settings
from meter.signals import stop_on_signals

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate", help="evaluate usage alert rules; fire each crossed threshold once"
    )
    p.add_argument("--once", action="store_true", help="one full sweep, then exit")
    # Crash tests: `--fault after_commit:2` kills the process (SIGKILL) at the 2nd such point.
    p.add_argument("--fault", action="append", default=[], help=argparse.SUPPRESS)
    p.set_defaults(func=evaluate_cmd)


async def evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from evaluator.worker import Evaluator
    from meter.crashpoints import Faults

    async with Evaluator(settings, faults=Faults.parse(args.fault)) as evaluator:
        if args.once:
            enqueued = await evaluator.sweep()
            print(f"enqueued {enqueued} webhook event(s)")
            return 0
        from meter.metrics import metrics_server

        port, registry = settings.evaluator_metrics_port, evaluator.metrics.registry
        with metrics_server(settings.metrics_host, port, registry):
            stop = stop_on_signals()
            log.info("evaluator started")
            await evaluator.run(stop)
        return 0


def evaluate_cmd(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(evaluate(settings, args))
