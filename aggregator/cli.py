"""`meter aggregate`: registered into the `meter` command by meter/cli.py via `add_parser`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from meter import wiring
from meter.config import Settings
from meter.signals import stop_on_signals

if TYPE_CHECKING:
    import multiprocessing

    from aggregator.worker import Worker

T = TypeVar("T")

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
        "--processes",
        type=_positive,
        default=1,
        help="with --once: drain in N processes at once, the i-th taking every N-th shard from i",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="stream entries per transaction (default METER_AGGREGATOR_BATCH_SIZE)",
    )
    # Crash tests: `--fault after_commit:3` kills the process (SIGKILL) at the 3rd such point.
    p.add_argument("--fault", action="append", default=[], help=argparse.SUPPRESS)
    p.set_defaults(func=aggregate_cmd)

    r = subparsers.add_parser(
        "reattribute",
        help="attach unattributed usage to the subscription items now known; report stuck usage",
    )
    r.add_argument("--tenant", help="with --customer (default METER_BILLING_TENANT)")
    r.add_argument("--customer", help="only this customer key (default: every customer)")
    r.add_argument(
        "--force-whole",
        metavar="METER",
        help="with --customer and --at: move this meter's stuck bucket holding --at whole into "
        "the item period billing that instant (all its stuck buckets for a unique_count meter)",
    )
    r.add_argument("--at", type=_instant, help="an RFC 3339 instant inside the stuck bucket")
    r.set_defaults(func=reattribute_cmd)


def _instant(text: str) -> int:
    from meter.ingest.validation import parse_timestamp_ms

    ms = parse_timestamp_ms(text)
    if ms is None:
        raise argparse.ArgumentTypeError("must be RFC 3339 with an offset")
    return ms


async def reattribute_once(settings: Settings, args: argparse.Namespace) -> int:
    """One re-attribution pass (a customer, or the sweep over all); prints what moved and what
    stays stuck."""
    import asyncpg

    from aggregator.reattribute import Reattributed, reattribute, sweep
    from aggregator.windows import retention_cutoff, to_datetime
    from meter.wiring import attributor as wired_attributor

    if args.force_whole and (args.customer is None or args.at is None):
        raise SystemExit("meter reattribute: --force-whole needs --customer and --at")
    day = retention_cutoff(int(time.time() * 1000), settings.raw_retention_s)
    since = to_datetime((day - dt.date(1970, 1, 1)).days * 86_400_000)
    done = Reattributed()
    conn = await asyncpg.connect(settings.database_url)
    try:
        attributor = wired_attributor()
        if args.customer is None:
            await sweep(conn, attributor, since, done, settings.dimension_combinations)
        else:
            tenant = args.tenant or settings.billing_default_tenant
            force = (args.force_whole, args.at) if args.force_whole else None
            await reattribute(
                conn,
                attributor,
                tenant,
                args.customer,
                since,
                done,
                force,
                dimension_limit=settings.dimension_combinations,
            )
    finally:
        await conn.close()
    print(
        f"re-attributed {done.events} event(s), {done.whole_buckets} bucket(s) whole; "
        f"{done.stuck} bucket(s) stuck"
    )
    return 0


def reattribute_cmd(settings: Settings, args: argparse.Namespace) -> int:
    return _run(reattribute_once(settings, args))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


async def aggregate(settings: Settings, args: argparse.Namespace) -> int:
    """Run the worker (or one drain with --once) until SIGTERM/SIGINT."""
    if args.once:
        folded, _ = await drain(settings, args)
        print(f"aggregated {folded} event(s)")
        return 0
    async with _worker(settings, args) as worker:
        stop = stop_on_signals()
        log.info("aggregator started", extra={"shards": settings.shards})
        await worker.run(stop)
        return 0


async def drain(
    settings: Settings, args: argparse.Namespace, part: tuple[int, int] = (0, 1)
) -> tuple[int, list[int]]:
    """One `--once` drain of the free shards of `part` (see Worker.drain): the events folded
    and the shards drained."""
    async with _worker(settings, args) as worker:
        return await worker.drain(part), worker.drained


@contextlib.asynccontextmanager
async def _worker(settings: Settings, args: argparse.Namespace) -> AsyncIterator[Worker]:
    from aggregator.metrics import AggregatorMetrics
    from aggregator.worker import Worker
    from meter.connections import redis_client
    from meter.crashpoints import Faults
    from meter.metrics import metrics_server

    metrics = AggregatorMetrics()
    port = 0 if args.once else settings.aggregator_metrics_port
    redis = redis_client(settings.redis_url)
    try:
        with metrics_server(settings.metrics_host, port, metrics.registry):
            async with Worker(
                settings,
                redis,
                metrics=metrics,
                faults=Faults.parse(args.fault),
                batch_size=args.batch_size,
                attributor=wiring.attributor(),
            ) as worker:
                yield worker
    finally:
        await redis.aclose()


def aggregate_cmd(settings: Settings, args: argparse.Namespace) -> int:
    if args.processes > 1:
        if not args.once:
            # Continuous workers already share the shards through leases: run N of them.
            raise SystemExit("meter aggregate: --processes needs --once")
        return _drain_in_processes(settings, args)
    return _run(aggregate(settings, args))


def _run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _drain_in_processes(settings: Settings, args: argparse.Namespace) -> int:
    """`--once --processes N`: a Python process folds on one core, so on a machine with more
    cores a drain runs N processes, each over its own shards (the i-th takes the shards ≡ i
    mod N, each still through its lease, so a worker running elsewhere is never raced).
    Exactly-once is per shard, as in one process. A part that dies leaves its unfinished
    shards, with their checkpoints, to the next run, while the other parts finish theirs; the
    command then fails.

    One plain process per part, not a process pool: a part exits as soon as its drain is done,
    so parts whose parent was killed finish their shards and exit rather than wait on the pool
    for more work forever."""
    import multiprocessing

    n = args.processes
    context = multiprocessing.get_context("spawn")
    # A part writes one small report straight into this pipe (no feeder thread) and exits;
    # N reports stay far below the pipe's buffer, so no part blocks on a parent that reads
    # them only after joining, or that is gone.
    reports: multiprocessing.SimpleQueue[tuple[int, int, list[int]]] = context.SimpleQueue()
    procs = [
        context.Process(
            target=_part, args=(settings, args, (i, n), reports), name=f"aggregate-{i + 1}-of-{n}"
        )
        for i in range(n)
    ]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        # Stopping the command stops its parts: SIGTERM kills them where they are (safe at any
        # line, like kill -9), SIGINT cancels their drains. Only a parent killed with SIGKILL
        # leaves its parts running; they then finish their shards and exit.
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for proc in procs:
        proc.join()
    done: dict[int, tuple[int, list[int]]] = {}
    while not reports.empty():
        index, folded, shards = reports.get()
        done[index] = (folded, shards)
    for i, proc in enumerate(procs):
        if i in done and proc.exitcode != 0:
            # Its report came after its last commit: the work stands, the exit is only logged.
            log.warning(
                "aggregate --once: a part exited badly after its drain",
                extra={"part": f"{i + 1} of {n}", "exit_code": proc.exitcode},
            )
        elif i not in done:
            log.error(
                "aggregate --once: a part died; its unfinished shards wait for the next run",
                extra={"part": f"{i + 1} of {n}", "exit_code": proc.exitcode},
            )
    for i, (folded, shards) in sorted(done.items()):
        print(f"part {i + 1} of {n}: {folded} event(s) from shards {_shard_list(shards)}")
    if len(done) < n:
        return 1
    print(f"aggregated {sum(folded for folded, _ in done.values())} event(s)")
    return 0


def _shard_list(shards: list[int]) -> str:
    return ", ".join(map(str, shards)) or "none"


def _part(
    settings: Settings,
    args: argparse.Namespace,
    part: tuple[int, int],
    reports: multiprocessing.SimpleQueue[tuple[int, int, list[int]]],
) -> None:
    from meter import logs

    logs.setup(settings.log_level, settings.log_format)
    folded, shards = _run(drain(settings, args, part))
    reports.put((part[0], folded, shards))
