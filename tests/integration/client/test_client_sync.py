"""MeterClientSync from plain threads against the real server."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from meter.config import Settings
from meter_client import AuthenticationFailed, MeterClientSync, RejectedEvent
from tests.integration.client.conftest import base_url
from tests.integration.client.test_client import HOUR, stored

Client = TestClient[object, object]


async def test_sync_client_from_several_threads(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    rejected: list[RejectedEvent] = []
    seen_threads: set[str] = set()

    def on_rejected(event: RejectedEvent) -> None:
        seen_threads.add(threading.current_thread().name)
        rejected.append(event)

    def product_service() -> MeterClientSync:
        # Runs off the test's event loop, which serves the app meanwhile.
        with MeterClientSync(
            base_url(client), api_key, max_batch=5, flush_interval=HOUR, on_rejected=on_rejected
        ) as meter:

            def worker(n: int) -> None:
                for i in range(10):
                    meter.record("cus_1", "api_calls", id=f"t{n}-{i}")

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            meter.record("cus_1", "api_calls", id="old", timestamp=1_000_000)
            meter.flush()
            assert meter.stats.accepted == 30
        return meter

    meter = await asyncio.to_thread(product_service)
    assert meter.stats.rejected == 1
    assert [(r.id, r.reason) for r in rejected] == [("old", "too_late")]
    assert seen_threads == {"meter-client"}  # callbacks run on the client's own thread
    assert len(await stored(redis, settings)) == 30


async def test_sync_close_flushes_and_is_idempotent(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    def product_service() -> str:
        meter = MeterClientSync(base_url(client), api_key, flush_interval=HOUR)
        event_id = meter.record("cus_1", "api_calls")
        meter.close()
        meter.close()
        return event_id

    event_id = await asyncio.to_thread(product_service)
    assert set(await stored(redis, settings)) == {event_id}


def test_bad_options_leave_no_thread_behind() -> None:
    before = threading.active_count()
    with pytest.raises(ValueError, match="max_batch"):
        MeterClientSync("http://127.0.0.1:9", "key", max_batch=5000)
    assert threading.active_count() == before


async def test_sync_client_raises_a_wrong_key_from_flush_and_close(client: Client) -> None:
    def product_service() -> MeterClientSync:
        meter = MeterClientSync(base_url(client), "not-a-key", flush_interval=HOUR)
        meter.record("cus_1", "api_calls", id="x")
        with pytest.raises(AuthenticationFailed, match="HTTP 401"):
            meter.flush()
        with pytest.raises(AuthenticationFailed):
            meter.record("cus_1", "api_calls", id="y")
        with pytest.raises(AuthenticationFailed):
            meter.close()
        return meter

    meter = await asyncio.to_thread(product_service)
    assert meter.stats.failed == 1
    # close raised, and still stopped its thread
    assert "meter-client" not in {t.name for t in threading.enumerate()}
