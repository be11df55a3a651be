"""Real processes and injected faults, shared by the chaos suite and the billing simulation.

`Proc` runs one `python -m meter …` subprocess in its own process group (kill -9 takes its forked
workers too); `EmulatorControl` speaks the Stripe emulator's `/_emulator` control API (faults,
meter events, webhook deliveries); `STRIPE_FAULTS` are the Stripe failures both suites inject on
the meter event paths. Databases: a fresh migrated one per run, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg

from meter.embedded import EmbeddedRedis, port_open
from meter.migrate import migrate
from meter.stripe_emulator import EmulatorConfig

T = TypeVar("T")

STRIPE_METER_PATH = "*/billing/meter_event*"  # v2 session + stream, v1 meter events
STRIPE_FAULTS = ("stripe_429", "stripe_5xx", "stripe_timeout", "stripe_drop")


class Proc:
    """One `python -m meter …` subprocess in its own process group; kill -9 and restart."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log = logdir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "meter", *self.args,
                env=self.env, stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    async def kill(self) -> None:
        """kill -9 (the whole group: serve may fork workers)."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            await self.proc.wait()
        self.proc = None

    async def stop(self) -> None:
        self._signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                await self.kill()
        self.proc = None

    async def wait(self, timeout_s: float) -> int | None:
        """Its exit code, or None if it still runs after `timeout_s`."""
        if self.proc is None:
            return None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            return None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def why(self) -> str:
        """Its exit code and the last lines of its log."""
        code = None if self.proc is None else self.proc.returncode
        tail = self.log.read_text(errors="replace").splitlines()[-5:] if self.log.exists() else []
        return f"exit {code}: " + " | ".join(tail)


async def wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_open("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")
        await asyncio.sleep(0.1)


def lost_connection_errors() -> list[Exception]:
    """What a worker's round meets when Postgres terminates a pooled connection (asyncpg raises
    the first or the second, depending on when the termination reached it) or a pool has none
    to give."""
    return [
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
        TimeoutError(),
    ]


def failing_first(
    real: Callable[[], Awaitable[T]], failures: list[Exception]
) -> Callable[[], Awaitable[T]]:
    """`real`, except that its first calls raise `failures`, one each, in order."""

    async def call() -> T:
        if failures:
            raise failures.pop(0)
        return await real()

    return call


async def terminate_backends(database_url: str) -> None:
    """Every connection of the run's database dies at once, as in a Postgres restart."""
    conn = await asyncpg.connect(database_url)
    try:
        await terminate_others(conn)
    finally:
        await conn.close()


async def terminate_others(conn: asyncpg.Connection) -> None:
    """Every connection of `conn`'s database but `conn` dies at once."""
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )


def stripe_fault_rule(kind: str, rng: random.Random) -> dict[str, Any]:
    """The emulator fault rule for one of `STRIPE_FAULTS`, on the meter event paths."""
    rule: dict[str, Any]
    if kind == "stripe_429":
        rule = {"mode": "rate_limit", "count": rng.randint(5, 20)}
    elif kind == "stripe_5xx":
        rule = {"mode": "error", "status": rng.choice([500, 502, 503]), "count": rng.randint(3, 10)}
    elif kind == "stripe_timeout":
        rule = {"mode": "timeout", "delay": 3.0, "count": rng.randint(1, 3)}
    elif kind == "stripe_drop":  # applied, then the connection is cut: a lost response
        rule = {"mode": "drop", "count": rng.randint(1, 4)}
    else:
        raise ValueError(f"unknown Stripe fault {kind!r}")
    return {"path": STRIPE_METER_PATH, **rule}


class EmulatorControl:
    """The emulator's control API (`/_emulator/…`, see meter/stripe_emulator/README.md)."""

    def __init__(self, http: aiohttp.ClientSession, api_base: str) -> None:
        self.http = http
        self.base = f"{api_base}/_emulator"

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, self.base + path, json=body) as response:
            response.raise_for_status()
            return await response.json()

    async def fault(self, rule: dict[str, Any]) -> None:
        await self.call("POST", "/faults", rule)

    async def clear_faults(self) -> None:
        await self.call("DELETE", "/faults")

    async def meter_events(self) -> list[dict[str, Any]]:
        doc = await self.call("GET", "/meter_events")
        events: list[dict[str, Any]] = doc["data"]
        return events


def webhook_emulator(serve_port: int, secret: str, seed: int, **overrides: Any) -> EmulatorConfig:
    """An emulator on free ports whose signed webhooks go to `meter serve` on `serve_port`."""
    return EmulatorConfig(
        port=0,
        meter_events_port=0,
        webhook_url=f"http://127.0.0.1:{serve_port}/stripe/webhook",
        webhook_secret=secret,
        fault_seed=seed,
        **overrides,
    )


def process_env(
    database_url: str, redis_url: str, emu: Any, webhook_secret: str, **settings: str
) -> dict[str, str]:
    """The environment of a `meter` process of a run: this process's, the run's Postgres, Redis
    and emulator (`emu`: a RunningEmulator), quick reporter timings, then `settings`."""
    return {
        **os.environ,
        "METER_DATABASE_URL": database_url,
        "METER_REDIS_URL": redis_url,
        "METER_SHARDS": "4",
        "METER_LOG_LEVEL": "warning",
        "METER_METRICS_PORT": "0",  # several runs' `meter serve` on one host
        "METER_REPORTER_TIMEOUT": "2s",
        "METER_REPORTER_BACKOFF_BASE": "0.05s",
        "STRIPE_API_KEY": emu.api_key,
        "STRIPE_API_BASE": emu.api_base,
        "STRIPE_METER_EVENTS_BASE": emu.meter_events_base,
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
        **settings,
    }


async def own_redis(workdir: Path) -> EmbeddedRedis:
    """A started redis-server of the run's own (`appendfsync always`: a kill loses nothing)."""
    redis = EmbeddedRedis(workdir / "redis", appendfsync="always")
    await asyncio.to_thread(redis.start)
    return redis


# --------------------------------------------------------------------------- databases


def server_url(workdir: Path) -> tuple[str, Any]:
    """Postgres from METER_TEST_DATABASE_URL, else 127.0.0.1:5432/test, else an embedded one
    (returned second, to stop)."""
    url = os.environ.get("METER_TEST_DATABASE_URL")
    if url:
        return url, None
    if port_open("127.0.0.1", 5432):
        return "postgresql://postgres@127.0.0.1:5432/test", None
    from meter.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(workdir / "pg")
    return pg.start(), pg


async def fresh_database(server: str, prefix: str) -> tuple[str, str]:
    """A new migrated database next to `server`'s: (its url, its name)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = server.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url, name


async def drop_database(server: str, name: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
