"""MeterClient against the real server: batching, ids, flush on close, per-item rejections,
requests refused as a whole."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from meter import limits
from meter.config import Settings
from meter.events import UsageEvent
from meter.redis_keys import Keys
from meter_client import (
    AuthenticationFailed,
    BatchFailed,
    ClientClosed,
    MeterClient,
    RejectedEvent,
)
from meter_client.aio import LOGGED_IDS
from tests.conftest import start_client
from tests.integration.client.conftest import base_url
from tests.integration.test_ingest import stream_events

Client = TestClient[object, object]
HOUR = 3600.0


async def eventually(check: Callable[[], object]) -> None:
    """Wait for a condition the background sender brings about (the test timeout bounds it)."""
    while not check():  # noqa: ASYNC110 - polling state owned by another task
        await asyncio.sleep(0.01)


async def stored(redis: Redis, settings: Settings) -> dict[str, UsageEvent]:
    return {e.id: e for e in await stream_events(redis, settings)}


async def test_close_flushes_buffered_events(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    before = time.time()
    async with MeterClient(base_url(client), api_key, flush_interval=HOUR) as meter:
        generated = await meter.record("cus_1", "api_calls")
        await meter.record("cus_1", "tokens", 2.5, id="t-1", properties={"model": "m1"})
        after = time.time()
        assert meter.buffered == 2
        assert await stored(redis, settings) == {}  # nothing sent before the interval or close
    events = await stored(redis, settings)
    assert set(events) == {generated, "t-1"}
    assert len(generated) == 26
    # Stamped at record time by the client, not at delivery by the server.
    assert before * 1000 - 1 <= events[generated].timestamp_ms <= after * 1000 + 1
    assert (events["t-1"].value, events["t-1"].properties) == ("2.5", {"model": "m1"})
    assert meter.stats.accepted == 2
    assert meter.stats.batches == 1


async def test_flush_sends_now_and_waits_for_the_answer(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    async with MeterClient(base_url(client), api_key, flush_interval=HOUR) as meter:
        await meter.record("cus_1", "api_calls", id="a")
        await meter.flush()
        assert set(await stored(redis, settings)) == {"a"}
        assert meter.buffered == 0
        await meter.flush()  # nothing pending: returns at once
        assert meter.stats.batches == 1


async def test_batches_go_when_full_and_when_the_interval_passes(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    async with MeterClient(base_url(client), api_key, max_batch=3, flush_interval=HOUR) as meter:
        for i in range(7):
            await meter.record("cus_1", "api_calls", id=f"e{i}")
        await eventually(lambda: meter.stats.accepted == 6)
        assert meter.stats.batches == 2
        assert meter.buffered == 1  # the seventh waits for a full batch, the interval or close
    assert len(await stored(redis, settings)) == 7

    async with MeterClient(base_url(client), api_key, flush_interval=0.05) as meter:
        await meter.record("cus_1", "api_calls", id="timed")
        await eventually(lambda: meter.stats.accepted == 1)  # no flush, no close: the timer
        assert "timed" in await stored(redis, settings)


async def test_a_batch_is_split_to_stay_under_the_byte_cap(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    async with MeterClient(
        base_url(client), api_key, max_batch_bytes=400, flush_interval=HOUR
    ) as meter:
        for i in range(10):
            await meter.record("cus_1", "api_calls", id=f"b{i}", timestamp=time.time())
    assert meter.stats.batches > 2
    assert meter.stats.accepted == 10
    assert len(await stored(redis, settings)) == 10


async def test_rejected_items_are_reported_once_and_never_retried(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    rejected: list[RejectedEvent] = []
    async with MeterClient(
        base_url(client), api_key, flush_interval=HOUR, on_rejected=rejected.append
    ) as meter:
        await meter.record("cus_1", "api_calls", id="ok")
        await meter.record("cus_1", "api_calls", id="old", timestamp="2020-01-01T00:00:00Z")
        await meter.record("cus_1", "m" * 101, id="long-meter")
    assert [(r.id, r.reason) for r in rejected] == [
        ("old", "too_late"),
        ("long-meter", "meter_too_long"),
    ]
    assert rejected[0].event["timestamp"] == "2020-01-01T00:00:00Z"
    assert (meter.stats.accepted, meter.stats.rejected) == (1, 2)
    assert meter.stats.statuses == {"200": 1}  # one request: rejections are not retried
    assert set(await stored(redis, settings)) == {"ok"}


async def test_an_over_limit_item_is_reported_as_rejected_naming_the_rule(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    until = int(time.time() * 1000) + 86_400_000
    keys = Keys(settings.redis_prefix)
    await limits.block(redis, keys, "acme", "cus_1", "api_calls", rule_id="cap", until_ms=until)
    rejected: list[RejectedEvent] = []
    async with MeterClient(
        base_url(client), api_key, flush_interval=HOUR, on_rejected=rejected.append
    ) as meter:
        await meter.record("cus_1", "api_calls", id="over")
        await meter.record("cus_2", "api_calls", id="fine")
    assert [(r.id, r.reason) for r in rejected] == [("over", "over_limit")]
    assert "'cap'" in rejected[0].message
    assert (meter.stats.accepted, meter.stats.rejected) == (1, 1)
    assert meter.stats.statuses == {"200": 1}  # not retried
    assert set(await stored(redis, settings)) == {"fine"}


async def test_a_wrong_api_key_is_raised_to_the_caller_and_not_retried(
    client: Client, api_key: str
) -> None:
    failures: list[BatchFailed] = []
    meter = MeterClient(
        base_url(client), "not-a-key", max_batch=2, flush_interval=HOUR, on_error=failures.append
    )
    for i in range(5):
        await meter.record("cus_1", "api_calls", id=f"x{i}")
    with pytest.raises(AuthenticationFailed) as raised:
        await meter.flush()
    assert (raised.value.status, raised.value.error_type, raised.value.retryable) == (
        401,
        "authentication_error",
        False,
    )
    # The key cannot work for any later batch: one request, then everything buffered is
    # handed to on_error without being sent.
    assert meter.stats.statuses == {"401": 1}
    assert [[e["id"] for e in f.events] for f in failures] == [["x0", "x1"], ["x2", "x3"], ["x4"]]
    assert all(isinstance(f, AuthenticationFailed) for f in failures)
    assert [f.attempts for f in failures] == [1, 0, 0]
    assert meter.stats.failed == 5
    assert meter.buffered == 0
    with pytest.raises(AuthenticationFailed):
        await meter.record("cus_1", "api_calls", id="later")
    with pytest.raises(AuthenticationFailed):
        await meter.aclose()
    await meter.aclose()  # closed: idempotent, nothing left to raise for


async def test_a_wrong_api_key_surfaces_when_the_context_exits(
    client: Client, api_key: str
) -> None:
    with pytest.raises(AuthenticationFailed, match="HTTP 401"):
        async with MeterClient(base_url(client), "not-a-key", flush_interval=HOUR) as meter:
            await meter.record("cus_1", "api_calls", id="x")
    assert meter.stats.failed == 1


async def test_a_forbidden_answer_is_raised_like_a_wrong_key() -> None:
    # meter's ingest answers 401 for every key problem; a gateway in front of it may say 403.
    async def forbid(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"type": "forbidden", "message": "not from here", "param": None}},
            status=403,
        )

    app = web.Application()
    app.router.add_post("/v1/events", forbid)
    async with TestServer(app) as server:
        meter = MeterClient(str(server.make_url("")), "key", on_error=lambda _: None)
        await meter.record("cus_1", "api_calls", id="x")
        with pytest.raises(AuthenticationFailed) as raised:
            await meter.aclose()
    assert (raised.value.status, raised.value.error_type) == (403, "forbidden")
    assert meter.stats.statuses == {"403": 1}


async def test_default_callbacks_log_the_event_id_status_and_reason(
    client: Client, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="meter_client")
    async with MeterClient(base_url(client), api_key, flush_interval=HOUR) as meter:
        await meter.record("cus_1", "api_calls", id="ok")
        await meter.record("cus_1", "api_calls", id="old", timestamp="2020-01-01T00:00:00Z")
    [rejected] = caplog.records
    assert rejected.levelno == logging.WARNING
    assert "old" in rejected.getMessage()
    assert "status=rejected" in rejected.getMessage()
    assert "reason=too_late" in rejected.getMessage()
    assert (rejected.event_id, rejected.status, rejected.reason) == (  # type: ignore[attr-defined]
        "old",
        "rejected",
        "too_late",
    )

    caplog.clear()
    meter = MeterClient(base_url(client), "not-a-key", flush_interval=HOUR)
    await meter.record("cus_1", "api_calls", id="dropped-1")
    await meter.record("cus_1", "api_calls", id="dropped-2")
    with pytest.raises(AuthenticationFailed):
        await meter.aclose()
    [dropped] = caplog.records
    assert dropped.levelno == logging.ERROR
    message = dropped.getMessage()
    assert "dropped-1, dropped-2" in message
    assert "status=401" in message
    assert "reason=authentication_error" in message
    assert dropped.event_ids == ["dropped-1", "dropped-2"]  # type: ignore[attr-defined]


async def test_a_dropped_batch_log_line_names_a_bounded_number_of_ids(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="meter_client")
    meter = MeterClient(base_url(client), "not-a-key", flush_interval=HOUR)
    for i in range(LOGGED_IDS + 5):
        await meter.record("cus_1", "api_calls", id=f"e{i:03}")
    with pytest.raises(AuthenticationFailed):
        await meter.aclose()
    [dropped] = caplog.records
    assert f"e{LOGGED_IDS - 1:03} and 5 more" in dropped.getMessage()
    assert f"e{LOGGED_IDS:03}" not in dropped.getMessage()


async def test_a_too_large_body_is_reported_and_not_retried(
    settings: Settings, api_key: str
) -> None:
    server = await start_client(settings.replace(max_body_bytes=300))
    failures: list[BatchFailed] = []
    try:
        async with MeterClient(
            base_url(server), api_key, flush_interval=HOUR, on_error=failures.append
        ) as meter:
            for i in range(10):
                await meter.record("cus_1", "api_calls", id=f"big{i}")
    finally:
        await server.close()
    [failure] = failures
    assert (failure.status, failure.retryable, len(failure.events)) == (413, False, 10)
    assert meter.stats.statuses == {"413": 1}


async def test_a_callback_that_raises_does_not_stop_delivery(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    def explode(event: RejectedEvent) -> None:
        raise RuntimeError("bug in the caller's callback")

    async with MeterClient(
        base_url(client), api_key, max_batch=1, flush_interval=HOUR, on_rejected=explode
    ) as meter:
        await meter.record("cus_1", "api_calls", id="bad", timestamp="2020-01-01T00:00:00Z")
        await meter.record("cus_1", "api_calls", id="good")
    assert set(await stored(redis, settings)) == {"good"}


async def test_record_after_close_raises(client: Client, api_key: str) -> None:
    meter = MeterClient(base_url(client), api_key)
    await meter.aclose()
    await meter.aclose()  # idempotent
    with pytest.raises(ClientClosed):
        await meter.record("cus_1", "api_calls")


async def test_unencodable_properties_fail_the_caller_at_record(
    client: Client, api_key: str
) -> None:
    async with MeterClient(base_url(client), api_key) as meter:
        with pytest.raises(TypeError):
            await meter.record("cus_1", "api_calls", properties={"x": object()})
        assert meter.buffered == 0
