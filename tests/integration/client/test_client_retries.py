"""Retries against the real server: lost answers, dropped connections, timeouts, 503s from
backpressure, and the client's own full buffer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from meter.config import Settings
from meter.embedded import EmbeddedRedis
from meter_client import BatchFailed, MeterClient, RetryPolicy
from tests.conftest import start_client
from tests.integration.client.conftest import MakeProxy, base_url
from tests.integration.client.test_client import HOUR, eventually, stored
from tests.integration.test_ingest import stream_events

Client = TestClient[object, object]
FAST = RetryPolicy(max_attempts=50, base_delay=0.005, max_delay=0.02)


@pytest.mark.parametrize("fault", ["lost", "reset", "hang"])
async def test_a_retry_after_the_server_committed_is_counted_once(
    client: Client,
    api_key: str,
    redis: Redis,
    settings: Settings,
    make_proxy: MakeProxy,
    fault: str,
) -> None:
    proxy = await make_proxy(base_url(client))
    proxy.script = [fault]
    async with MeterClient(
        proxy.url, api_key, flush_interval=HOUR, retry=FAST, request_timeout=0.5
    ) as meter:
        ids = [await meter.record("cus_1", "api_calls") for _ in range(3)]
    # Both attempts reached the server, byte for byte the same: the same ids.
    assert len(proxy.bodies) == 2
    assert proxy.bodies[0] == proxy.bodies[1]
    assert [e["id"] for e in orjson.loads(proxy.bodies[0])] == ids
    assert proxy.statuses_of_answers() == [["accepted"] * 3, ["duplicate"] * 3]
    assert meter.stats.retries == 1
    assert (meter.stats.accepted, meter.stats.duplicates) == (0, 3)
    events = await stream_events(redis, settings)
    assert sorted(e.id for e in events) == sorted(ids)  # in the stream once each


async def test_503_from_backpressure_is_retried_then_reported(
    settings: Settings, api_key: str, redis: Redis
) -> None:
    # A high-water mark of 1: the first event fills a shard's stream, then the server refuses.
    own = settings.replace(stream_high_water=1, shards=1)
    server = await start_client(own)
    failures: list[BatchFailed] = []
    try:
        async with MeterClient(
            base_url(server),
            api_key,
            max_batch=1,
            flush_interval=HOUR,
            retry=RetryPolicy(max_attempts=3, base_delay=0.005, max_delay=0.02),
            on_error=failures.append,
        ) as meter:
            await meter.record("cus_1", "api_calls", id="first")
            await meter.record("cus_1", "api_calls", id="second")
    finally:
        await server.close()
    assert meter.stats.statuses == {"200": 1, "503": 3}
    [failure] = failures
    assert (failure.status, failure.error_type, failure.retryable) == (503, "unavailable", True)
    assert failure.attempts == 3
    assert [e["id"] for e in failure.events] == ["second"]
    assert set(await stored(redis, own)) == {"first"}


async def test_a_full_buffer_makes_record_wait_and_loses_nothing(
    client: Client, api_key: str, redis: Redis, settings: Settings, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy(base_url(client))
    proxy.default = "refuse"  # the server is "down" until the test says otherwise
    async with MeterClient(
        proxy.url, api_key, max_batch=2, max_buffered=4, flush_interval=0.01, retry=FAST
    ) as meter:
        for i in range(4):
            await meter.record("cus_1", "api_calls", id=f"e{i}")
        blocked = asyncio.create_task(meter.record("cus_1", "api_calls", id="e4"))
        await eventually(lambda: len(proxy.bodies) >= 3)  # retrying, buffer full
        assert not blocked.done()
        assert meter.buffered == 4
        proxy.default = "pass"
        await blocked
    assert meter.stats.failed == 0
    assert set(await stored(redis, settings)) == {f"e{i}" for i in range(5)}


async def test_close_wakes_a_record_waiting_for_space(
    client: Client, api_key: str, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy(base_url(client))
    proxy.default = "refuse"
    failures: list[BatchFailed] = []
    meter = MeterClient(
        proxy.url,
        api_key,
        max_batch=1,
        max_buffered=1,
        retry=RetryPolicy(max_attempts=5, base_delay=0.005, max_delay=0.01),
        on_error=failures.append,
    )
    await meter.record("cus_1", "api_calls", id="held")
    blocked = asyncio.create_task(meter.record("cus_1", "api_calls", id="late"))
    await eventually(lambda: len(proxy.bodies) >= 1)
    await meter.aclose()  # gives "held" its remaining attempts, then reports it
    assert [[e["id"] for e in f.events] for f in failures] == [["held"]]
    with pytest.raises(Exception, match="closed"):
        await blocked


async def test_events_recorded_while_redis_is_down_arrive_after_it_restarts(
    settings: Settings, api_key: str, tmp_dir: Path
) -> None:
    redis_server = EmbeddedRedis(tmp_dir / "redis", appendfsync="always")
    own = settings.replace(redis_url=redis_server.start(), shards=2)
    server = await start_client(own)
    check = Redis.from_url(own.redis_url)
    try:
        async with MeterClient(base_url(server), api_key, flush_interval=HOUR, retry=FAST) as meter:
            await meter.record("cus_1", "api_calls", id="before")
            await meter.flush()
            redis_server.kill()
            await meter.record("cus_1", "api_calls", id="during")
            flushing = asyncio.create_task(meter.flush())
            await eventually(lambda: meter.stats.statuses.get("503", 0) >= 2)
            redis_server.start()  # same port and data: the server reconnects
            await flushing
        assert meter.stats.failed == 0
        assert set(await stored(check, own)) == {"before", "during"}
    finally:
        await check.aclose()
        await server.close()
        redis_server.stop()
