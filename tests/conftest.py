"""Fixtures: real PostgreSQL and Redis, each test isolated in its own database and key prefix.

Servers, in order of preference: METER_TEST_DATABASE_URL / METER_TEST_REDIS_URL; the local
services on 127.0.0.1:5432 (database `test`) and 127.0.0.1:6379 if they answer; otherwise
embedded ones started for the session (meter.embedded).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from aggregator import queries as aggregator_queries
from meter import auth
from meter.app import create_app
from meter.config import Settings
from meter.embedded import EmbeddedPostgres, EmbeddedRedis, port_open
from meter.migrate import migrate, migrations_dir


def migrations_before(version: int, dest: Path) -> Path:
    """A migrations directory holding only the files before `version`: an older release, to
    test an upgrade over the data it left."""
    for path in sorted(migrations_dir().glob("*.sql")):
        if int(path.name.split("_", 1)[0]) < version:
            (dest / path.name).write_text(path.read_text())
    return dest


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a database on a PostgreSQL server the test run may create databases on."""
    if url := os.environ.get("METER_TEST_DATABASE_URL"):
        yield url
    elif port_open("127.0.0.1", 5432):
        yield "postgresql://postgres@127.0.0.1:5432/test"
    else:
        server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
        try:
            yield server.start()
        finally:
            server.stop()
            # As root the data may live under /var/tmp (meter.embedded), outside pytest's tmp.
            shutil.rmtree(server.datadir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("METER_TEST_REDIS_URL"):
        yield url
    elif port_open("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
    else:
        server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
        try:
            yield server.start()
        finally:
            server.stop()


async def _admin(pg_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _create_template(pg_url: str, name: str) -> None:
    await _admin(pg_url, f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(with_database(pg_url, name))
    try:
        await migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_db(pg_url: str) -> Iterator[str]:
    """A migrated database that per-test databases are cloned from (fast: no re-migrating)."""
    name = f"meter_tpl_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_template(pg_url, name))
    try:
        yield name
    finally:
        asyncio.run(_admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def empty_database_url(pg_url: str) -> AsyncIterator[str]:
    """A fresh database with nothing in it (for migration tests)."""
    name = f"meter_t_{uuid.uuid4().hex[:12]}"
    await _admin(pg_url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(pg_url, name)
    finally:
        await _admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The running totals every bucket writer keeps (migrations/0007_usage_totals.sql) against the
# same totals computed from the buckets: the rows that differ.
TOTALS_DRIFT = f"""
WITH expected AS ({aggregator_queries.TOTALS_FROM_BUCKETS})
SELECT * FROM expected e
FULL JOIN usage_totals t USING (tenant, customer, subscription_item, period_start, meter)
WHERE (e.event_count, e.value_sum, e.value_max, e.last_value, e.last_at, e.last_event_id,
       e.unique_count)
   IS DISTINCT FROM (t.event_count, t.value_sum, t.value_max, t.last_value, t.last_at,
       t.last_event_id, t.unique_count)
"""


async def totals_drift(url: str) -> list[asyncpg.Record]:
    """Rows where the running totals disagree with the buckets (empty if none, or if the
    database cannot be reached: a test may have left its server down on purpose)."""
    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError):
        return []
    try:
        rows: list[asyncpg.Record] = await conn.fetch(TOTALS_DRIFT)
        return rows
    finally:
        await conn.close()


@pytest.fixture
async def database_url(pg_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, fully migrated database of this test's own. When the test is done, every
    test also checks that the usage totals match the rollup buckets, whatever wrote them."""
    name = f"meter_t_{uuid.uuid4().hex[:12]}"
    await _admin(pg_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = with_database(pg_url, name)
    try:
        yield url
        drift = await totals_drift(url)
        assert not drift, f"usage_totals drifted from usage_rollups: {drift[:5]}"
    finally:
        await _admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis: Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield prefix
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        await redis.delete(key)


@pytest.fixture
def settings(database_url: str, redis_url: str, redis_prefix: str) -> Settings:
    # Webhook receivers in tests listen on loopback.
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        shards=4,
        notifier_private_urls=True,
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def api_key(db: asyncpg.Connection) -> str:
    return await auth.create_key(db, name="test", tenant="acme")


async def start_client(settings: Settings) -> TestClient[object, object]:
    client: TestClient[object, object] = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    return client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[object, object]]:
    """An HTTP client for a meter app serving on a real port, on this test's DB and Redis."""
    c = await start_client(settings)
    yield c
    await c.close()


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    """A temp dir that a non-root server process (Postgres as root drops to `postgres`) can use."""
    tmp_path.chmod(0o755)
    return tmp_path


# A test that hangs is failed by pytest-timeout, whose dump shows where each thread is, but an
# event loop waiting in `select` says nothing of which task waits on what. Shortly before that
# timeout, every pending task's stack is printed too.
_TASK_DUMP_LEAD_S = 5.0


@pytest.hookimpl
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    timeout = float(getattr(settings, "timeout", 0) or 0)
    if timeout <= _TASK_DUMP_LEAD_S:
        return
    timer = threading.Timer(timeout - _TASK_DUMP_LEAD_S, _dump_tasks, args=(item.nodeid,))
    timer.daemon = True
    timer.start()
    item.stash[_TASK_DUMP] = timer


@pytest.hookimpl
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    timer = item.stash.get(_TASK_DUMP, None)
    if timer is not None:
        timer.cancel()


_TASK_DUMP = pytest.StashKey[threading.Timer]()


def _dump_tasks(nodeid: str) -> None:
    """Print where every pending asyncio task waits, down its chain of awaits (read from this
    timer's thread: the copy of the task set is retried if the loop changes it meanwhile)."""
    for _ in range(10):
        try:
            tasks = [t for t in list(asyncio.tasks._all_tasks) if not t.done()]
            break
        except RuntimeError:
            continue
    else:
        return
    lines = [f"~~~ {len(tasks)} pending asyncio tasks of {nodeid} ~~~"]
    for task in tasks:
        lines.append(f"{task.get_name()}:")
        awaited: Any = task.get_coro()
        for _ in range(40):
            frame = _first_attribute(awaited, ("cr_frame", "gi_frame", "ag_frame"))
            if frame is None:
                lines.append(f"    awaits {awaited!r:.200}")
                break
            code = frame.f_code
            lines.append(f"    {code.co_filename}:{frame.f_lineno} in {code.co_name}")
            awaited = _first_attribute(awaited, ("cr_await", "gi_yieldfrom", "ag_await"))
            if awaited is None:
                break
    print("\n".join(lines), file=sys.stdout, flush=True)


def _first_attribute(obj: Any, names: tuple[str, ...]) -> Any:
    """The first of these attributes `obj` has and is not None (coroutines, generators and
    async generators name their frame and what they await differently)."""
    return next((v for n in names if (v := getattr(obj, n, None)) is not None), None)
