"""The embedded fallback: a machine with no Postgres/Redis running still gets real ones."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from meter import auth
from meter.config import Settings
from meter.embedded import EmbeddedPostgres, EmbeddedRedis
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
