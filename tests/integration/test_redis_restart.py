"""Ingest across a Redis crash (kill -9) and restart, with AOF `appendfsync always`."""

from __future__ import annotations

from pathlib import Path

import orjson
from redis.asyncio import Redis

from meter.config import Settings
from meter.embedded import EmbeddedRedis
from meter.redis_keys import Keys
from tests.conftest import start_client
from tests.integration.test_ingest import auth_header, ev


async def test_acknowledged_events_survive_a_redis_crash_and_are_never_counted_twice(
    settings: Settings, api_key: str, tmp_dir: Path
) -> None:
    server = EmbeddedRedis(tmp_dir / "redis", appendfsync="always")
    url = server.start()
    own = settings.replace(redis_url=url, shards=2)
    client = await start_client(own)
    try:

        async def post(*ids: str) -> tuple[int, list[str]]:
            response = await client.post(
                "/v1/events", data=orjson.dumps([ev(i) for i in ids]), headers=auth_header(api_key)
            )
            doc = await response.json()
            return response.status, [r["status"] for r in doc.get("results", [])]

        assert await post("e1") == (200, ["accepted"])
        server.kill()
        status, _ = await post("e1", "e2")
        assert status == 503  # nothing acknowledged while Redis is down
        server.start()  # same data dir and port: AOF replays e1
        assert await post("e1", "e2") == (200, ["duplicate", "accepted"])
        keys = Keys(own.redis_prefix)
        check = Redis.from_url(url)
        try:
            lengths = [await check.xlen(keys.stream(s)) for s in range(own.shards)]
        finally:
            await check.aclose()
        assert sum(lengths) == 2
    finally:
        await client.close()
        server.stop()
