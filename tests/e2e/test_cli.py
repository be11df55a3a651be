"""The `meter` command as an operator runs it: migrate, create a key, serve, ingest, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from meter.embedded import free_port
from meter.migrate import migrate, migrations_dir

METER = str(Path(sys.executable).parent / "meter")


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [METER, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def env_for(database_url: str, redis_url: str, redis_prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "METER_DATABASE_URL": database_url,
        "METER_REDIS_URL": redis_url,
        "METER_REDIS_PREFIX": redis_prefix,
        "METER_SHARDS": "2",
        "METER_METRICS_PORT": str(free_port()),
    }


async def metrics_text(env: dict[str, str]) -> str:
    """The exposition `meter serve` gives on its metrics port (loopback by default)."""
    url = f"http://127.0.0.1:{env['METER_METRICS_PORT']}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        return await response.text()


def test_help_lists_the_commands() -> None:
    result = run("--help", env=dict(os.environ))
    assert result.returncode == 0
    for command in ("serve", "migrate", "keys", "aggregate", "report", "reconcile", "sync", "dev"):
        assert command in result.stdout


def test_bad_configuration_is_a_clear_error() -> None:
    result = run("migrate", env={**os.environ, "METER_SHARDS": "zero"})
    assert result.returncode == 2
    assert "METER_SHARDS must be an integer" in result.stderr


async def test_migrate_keys_serve_ingest(
    empty_database_url: str, redis_url: str, redis_prefix: str
) -> None:
    env = env_for(empty_database_url, redis_url, redis_prefix)
    first = run("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "0001_api_keys" in first.stdout
    again = run("migrate", env=env)
    assert again.returncode == 0
    assert "applied 0 migration(s)" in again.stdout

    created = run("keys", "create", "ci", "--tenant", "acme", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("mk_live_")
    listed = run("keys", "list", env=env)
    assert "acme\tci" in listed.stdout
    assert key not in listed.stdout  # the secret is never shown again

    async with (
        serving(env) as (http, logs),
        http.post(
            "/v1/events",
            data=orjson.dumps([{"id": "cli-1", "customer": "c", "meter": "m"}]),
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):
        assert response.status == 200
        assert (await response.json())["accepted"] == 1
        # Metrics (revenue among them) are on the metrics port only, never the API's.
        async with http.get("/metrics") as public:
            assert public.status == 404
            assert (await public.json())["error"]["type"] == "invalid_request_error"
        text = await metrics_text(env)
        assert 'meter_events_total{reason="",status="accepted"} 1.0' in text
        assert "meter_billing_webhook_seconds" in text  # billing's metrics too
    assert '"msg":"meter serving"' in "".join(logs)  # structured JSON log lines


async def test_serve_with_two_workers_shares_the_port_and_merges_metrics(
    database_url: str, redis_url: str, redis_prefix: str, api_key: str
) -> None:
    env = env_for(database_url, redis_url, redis_prefix)
    async with serving(env, "--workers", "2", processes=2) as (http, logs):

        async def post(n: int) -> int:
            async with http.post(
                "/v1/events",
                data=orjson.dumps({"id": f"w-{n}", "customer": "c", "meter": "m"}),
                headers={"Authorization": f"Bearer {api_key}"},
            ) as response:
                return int((await response.json())["accepted"])

        # Separate connections, so the kernel spreads them over both workers.
        assert sum(await asyncio.gather(*(post(n) for n in range(40)))) == 40
        async with http.get("/metrics") as response:
            assert response.status == 404  # never on the API port
        # A worker's hot-path series reach its file within meter.metrics.FOLD_EVERY_S.
        expected = 'meter_events_total{reason="",status="accepted"} 40.0'
        for _ in range(100):
            text = await metrics_text(env)
            if expected in text:
                break
            await asyncio.sleep(0.1)
        assert expected in text
    assert "".join(logs).count('"msg":"meter serving"') == 2


@contextlib.asynccontextmanager
async def serving(
    env: dict[str, str], *extra: str, processes: int = 1
) -> AsyncIterator[tuple[aiohttp.ClientSession, list[str]]]:
    """`meter serve` in a subprocess; yields a session on it, then stops it with SIGTERM.

    Yields once `processes` server processes have logged that they serve and the API is ready.
    The list it yields holds the server's log lines (stderr), complete once it has exited.
    """
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        METER, "serve", "--port", str(port), *extra, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert server.stderr is not None
    logs: list[str] = []

    async def collect(stream: asyncio.StreamReader) -> None:
        async for line in stream:
            logs.append(line.decode())

    collector = asyncio.create_task(collect(server.stderr))
    try:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as http:
            for _ in range(600):
                serving_now = sum('"msg":"meter serving"' in line for line in logs)
                if serving_now >= processes:
                    with contextlib.suppress(aiohttp.ClientConnectionError):
                        async with http.get("/readyz") as ready:
                            if ready.status == 200:
                                break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("meter serve did not become ready:\n" + "".join(logs))
            yield http, logs
    finally:
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 30) == 0
        await asyncio.wait_for(collector, 10)


async def test_every_process_refuses_a_database_that_was_not_migrated(
    empty_database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """A deploy that skipped `meter migrate`: serve, aggregate and report stop at startup and
    say what to do, rather than answer 500s on columns the schema does not have yet."""

    older = tmp_path / "older"
    older.mkdir()
    newest = sorted(migrations_dir().glob("*.sql"))
    for path in newest[:-1]:
        (older / path.name).write_text(path.read_text())
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn, older)  # the previous release's schema
    finally:
        await conn.close()
    # The reporter wants a Stripe key; it never gets as far as using it.
    env = {**env_for(empty_database_url, redis_url, redis_prefix), "STRIPE_API_KEY": "sk_test_x"}
    missing = newest[-1].stem
    for args in (
        ("serve", "--port", str(free_port())),
        ("aggregate", "--once"),
        ("report", "--once"),
    ):
        result = await asyncio.to_thread(run, *args, env=env)
        assert result.returncode != 0, (args, result.stderr)
        assert missing in result.stderr, (args, result.stderr)
        assert "run `meter migrate` first" in result.stderr
    assert run("migrate", env=env).returncode == 0
    result = await asyncio.to_thread(run, "aggregate", "--once", env=env)
    assert result.returncode == 0, result.stderr
