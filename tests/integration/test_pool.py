"""The API's connection pool releases connections without asyncpg's reset statement
(meter.connections.PooledConnection); what must not leak from one request to the next still
does not."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from meter import appkeys
from meter.connections import close_pool


async def test_a_connection_released_inside_a_transaction_comes_back_outside_it(
    client: TestClient[object, object],
) -> None:
    pool: asyncpg.Pool = client.server.app[appkeys.PG]
    async with pool.acquire() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        # A handler that failed between BEGIN and COMMIT, without a managed transaction.
        await conn.execute("BEGIN")
        await conn.execute("CREATE TEMP TABLE half_written (x int)")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same connection
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT to_regclass('pg_temp.half_written')") is None
    # And the release really skipped the reset statement: a session setting survives it.
    async with pool.acquire() as conn:
        await conn.execute("SET application_name = 'kept'")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW application_name") == "kept"


async def test_closing_a_pool_ends_even_while_a_connection_is_held(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A task that never gives its connection back (here: one waiting on a lock another
    connection holds) must not hold the process's shutdown: past its wait, close_pool
    terminates the pool, and the holder's transaction is gone with it."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    locker = await asyncpg.connect(database_url)
    try:
        await locker.execute("BEGIN")
        await locker.execute("SELECT pg_advisory_xact_lock(4242)")

        async def stuck() -> None:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(4242)")

        holder = asyncio.create_task(stuck())
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await close_pool(pool, "test", timeout_s=0.5)
        assert time.monotonic() - started < 5
        assert pool.is_closing()
        assert "a connection was still held at shutdown" in caplog.text
        # Its connection was closed under it.
        with pytest.raises((asyncpg.InterfaceError, asyncpg.PostgresConnectionError)):
            await holder
    finally:
        await locker.close()


async def test_closing_a_pool_with_nothing_held_is_quiet(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
    await close_pool(pool, "test", timeout_s=5)
    assert pool.is_closing()
    assert "still held" not in caplog.text
