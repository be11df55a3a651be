"""Running the HTTP API: one process, or N worker processes sharing the port (SO_REUSEPORT).

A Python process uses one core; `meter serve --workers N` runs N of them behind one port, the
kernel spreading connections. Workers are supervised: one that dies is started again. Their
metrics are merged through prometheus-client's multiprocess mode and served by the supervisor on
the metrics port (METER_METRICS_HOST:METER_METRICS_PORT), never on the API port.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from meter.config import Settings

log = logging.getLogger(__name__)

# prometheus-client reads this variable when it is first imported; it is its interface.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


async def _tune_gc(app: object) -> None:
    """Fewer, larger young-generation collections, and none over start-up objects.

    Ingest allocates a few short-lived objects per event; with the default threshold (700)
    the collector ran thousands of times a second (cost: docs/performance.md). Nearly
    all of these objects die young, so collecting rarely costs little memory.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def run_server(
    settings: Settings, host: str, port: int, *, reuse_port: bool = False, metrics: bool = True
) -> None:
    """Serve the API in this process until SIGINT/SIGTERM, on uvloop where available; and its
    metrics on the metrics port unless `metrics` is false (a worker: the supervisor serves them)."""
    from aiohttp import web

    from meter import appkeys
    from meter.app import create_app
    from meter.metrics import metrics_server

    loop: asyncio.AbstractEventLoop | None = None
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - Windows
        pass
    app = create_app(settings)
    app.on_startup.append(_tune_gc)
    metrics_port = settings.metrics_port if metrics else 0
    with metrics_server(settings.metrics_host, metrics_port, app[appkeys.METRICS].registry):
        web.run_app(
            app,
            host=host,
            port=port,
            access_log=None,
            print=None,
            loop=loop,
            reuse_port=reuse_port or None,
        )


def _worker(settings: Settings, host: str, port: int) -> None:
    from meter import logs

    logs.setup(settings.log_level, settings.log_format)
    run_server(settings, host, port, reuse_port=True, metrics=False)


def run_workers(settings: Settings, host: str, port: int, workers: int) -> int:
    """Run `workers` server processes on one port until SIGINT/SIGTERM; restart any that die."""
    own_dir = None
    if settings.metrics_dir is None:
        own_dir = tempfile.mkdtemp(prefix="meter-metrics-")
        settings = settings.replace(metrics_dir=own_dir)
    os.environ[MULTIPROC_ENV] = str(settings.metrics_dir)
    context = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    stopping = False

    def start() -> BaseProcess:
        proc = context.Process(target=_worker, args=(settings, host, port), daemon=False)
        proc.start()
        return proc

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    from meter.metrics import metrics_server, multiprocess_registry  # after MULTIPROC_ENV is set

    registry = multiprocess_registry(str(settings.metrics_dir))
    try:
        with metrics_server(settings.metrics_host, settings.metrics_port, registry):
            procs = [start() for _ in range(workers)]
            log.info("workers started", extra={"workers": workers, "port": port})
            while not stopping:
                time.sleep(0.2)
                for n, proc in enumerate(procs):
                    if not proc.is_alive() and not stopping:
                        _mark_dead(proc)
                        log.error("worker died; restarting", extra={"exitcode": proc.exitcode})
                        procs[n] = start()
    finally:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(30)
            _mark_dead(proc)
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    return 0


def _mark_dead(proc: BaseProcess) -> None:
    if proc.pid is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
