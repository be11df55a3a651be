"""`meter aggregate`: registered into the `meter` command by meter/cli.py via `add_parser`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from meter.config import Settings

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Add the `aggregate` command to an argparse subparsers object."""
    p = subparsers.add_parser(
        "aggregate", help="fold the Redis event streams into Postgres rollups, exactly once"
    )
    p.add_argument(
        "--once", action="store_true", help="drain everything present in the streams, then exit"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="stream entries per transaction (default METER_AGGREGATOR_BATCH_SIZE)",
    )
    # Crash tests: `--fault after_commit:3` kills the process (SIGKILL) at the 3rd such point.
    p.add_argument("--fault", action="append", default=[], help=argparse.SUPPRESS)
    p.set_defaults(func=aggregate_cmd)


async def aggregate(settings: Settings, args: argparse.Namespace) -> int:
    """Run the worker (or one drain with --once) until SIGTERM/SIGINT."""
    from aggregator.metrics import AggregatorMetrics
    from aggregator.worker import Worker
    from meter.connections import redis_client
    from meter.faults import Faults

    metrics = AggregatorMetrics()
    if settings.aggregator_metrics_port and not args.once:
        from prometheus_client import start_http_server

        start_http_server(settings.aggregator_metrics_port, registry=metrics.registry)
    redis = redis_client(settings.redis_url)
    try:
        async with Worker(
            settings,
            redis,
            metrics=metrics,
            faults=Faults.parse(args.fault),
            batch_size=args.batch_size,
        ) as worker:
            if args.once:
                folded = await worker.drain()
                print(f"aggregated {folded} event(s)")
                return 0
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            log.info("aggregator started", extra={"shards": settings.shards})
            await worker.run(stop)
            return 0
    finally:
        await redis.aclose()


def aggregate_cmd(settings: Settings, args: argparse.Namespace) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(aggregate(settings, args))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(aggregate(settings, args))
