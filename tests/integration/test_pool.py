"""The API's connection pool releases connections without asyncpg's reset statement
(meter.connections.PooledConnection); what must not leak from one request to the next still
does not."""

from __future__ import annotations

import asyncpg
from aiohttp.test_utils import TestClient

from meter import appkeys


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
