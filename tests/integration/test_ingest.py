"""POST /v1/events against a real Redis and Postgres."""

from __future__ import annotations

import asyncio
import gzip
import io
import time
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from meter import appkeys, auth, queries
from meter.config import Settings
from meter.events import UsageEvent
from meter.redis_keys import Keys, shard_of
from tests.conftest import start_client

Client = TestClient[object, object]


def auth_header(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ev(event_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": event_id, "customer": "cus_1", "meter": "api_calls", **fields}


async def post(client: Client, key: str, body: Any) -> tuple[int, dict[str, Any]]:
    response = await client.post("/v1/events", data=orjson.dumps(body), headers=auth_header(key))
    return response.status, await response.json()


async def stream_events(redis: Redis, settings: Settings) -> list[UsageEvent]:
    keys = Keys(settings.redis_prefix)
    found: list[UsageEvent] = []
    for shard in range(settings.shards):
        for _, fields in await redis.xrange(keys.stream(shard)):
            found.append(UsageEvent.decode(fields[b"e"]))
    return found


async def test_mixed_batch_answers_each_item_in_order(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    body = [
        ev("e1", value=2.5, properties={"region": "eu"}),
        ev("e2"),
        {"customer": "cus_1", "meter": "api_calls"},
        ev("e1"),
        ev("e3", value=-1),
        ev("e4", timestamp="2026-01-01T00:00:00Z"),
    ]
    status, doc = await post(client, api_key, body)
    assert status == 200
    assert [(r["id"], r["status"], r.get("reason")) for r in doc["results"]] == [
        ("e1", "accepted", None),
        ("e2", "accepted", None),
        (None, "rejected", "missing_id"),
        ("e1", "duplicate", None),
        ("e3", "rejected", "invalid_value"),
        ("e4", "rejected", "too_late"),
    ]
    assert (doc["accepted"], doc["duplicates"], doc["rejected"]) == (2, 1, 3)
    stored = {e.id: e for e in await stream_events(redis, settings)}
    assert set(stored) == {"e1", "e2"}
    assert stored["e1"].value == "2.5"
    assert stored["e1"].tenant == "acme"
    assert stored["e1"].properties == {"region": "eu"}
    assert stored["e2"].value == "1"


async def test_single_object_body(client: Client, api_key: str) -> None:
    status, doc = await post(client, api_key, ev("solo"))
    assert status == 200
    [result] = doc["results"]
    # Billing knows no customer here: accepted, with a warning (tests/integration/test_strict.py).
    assert (result["id"], result["status"], result["warning"]) == (
        "solo",
        "accepted",
        "unknown_customer",
    )


async def test_same_id_in_50_concurrent_requests_is_accepted_once(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    replies = await asyncio.gather(*(post(client, api_key, ev("same", value=7)) for _ in range(50)))
    statuses = [doc["results"][0]["status"] for _, doc in replies]
    assert statuses.count("accepted") == 1
    assert statuses.count("duplicate") == 49
    assert [e.id for e in await stream_events(redis, settings)] == ["same"]


async def test_many_concurrent_distinct_events_all_land(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    batches = [[ev(f"b{n}-{i}", value=i) for i in range(20)] for n in range(25)]
    replies = await asyncio.gather(*(post(client, api_key, b) for b in batches))
    assert all(doc["accepted"] == 20 for _, doc in replies)
    stored = await stream_events(redis, settings)
    assert sorted(e.id for e in stored) == sorted(e["id"] for b in batches for e in b)


async def test_dedupe_is_per_tenant(client: Client, api_key: str, db: asyncpg.Connection) -> None:
    other = await auth.create_key(db, name="other", tenant="globex")
    assert (await post(client, api_key, ev("shared")))[1]["accepted"] == 1
    assert (await post(client, other, ev("shared")))[1]["accepted"] == 1
    assert (await post(client, other, ev("shared")))[1]["duplicates"] == 1


async def test_dedupe_key_lives_for_the_dedupe_window_whatever_the_timestamp(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    ts = time.time() - settings.late_window_s + 600  # 10 min before it becomes too late
    await post(client, api_key, [ev("late", timestamp=ts), ev("now")])
    keys = Keys(settings.redis_prefix)
    for event_id in ("late", "now"):
        key = keys.dedupe(shard_of("acme", event_id, settings.shards), "acme", event_id)
        assert settings.dedupe_window_s - 30 <= await redis.ttl(key) <= settings.dedupe_window_s


async def test_late_window_boundaries_over_http(
    client: Client, api_key: str, settings: Settings
) -> None:
    now = time.time()
    _, doc = await post(
        client,
        api_key,
        [
            ev("inside", timestamp=now - settings.late_window_s + 60),
            ev("outside", timestamp=now - settings.late_window_s - 60),
            ev("soon", timestamp=now + 240),
            ev("far", timestamp=now + 360),
        ],
    )
    assert [r["status"] for r in doc["results"]] == ["accepted", "rejected", "accepted", "rejected"]
    assert [r.get("reason") for r in doc["results"]] == [None, "too_late", None, "in_future"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"{not json", "byte offset 1"),
        (b'[{"id": "a"} {"id": "b"}]', "byte offset"),
        (b"42", "event object or an array"),
        (b'"text"', "event object or an array"),
        (orjson.dumps([{}] * 1001), "1001 events"),
    ],
)
async def test_malformed_bodies_get_400_naming_the_problem(
    client: Client, api_key: str, body: bytes, fragment: str
) -> None:
    response = await client.post("/v1/events", data=body, headers=auth_header(api_key))
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]


async def test_body_over_one_mebibyte_gets_413(client: Client, api_key: str) -> None:
    body = orjson.dumps([ev(f"e{i}", properties={"pad": "x" * 1100}) for i in range(1000)])
    assert len(body) > 1024 * 1024
    response = await client.post("/v1/events", data=io.BytesIO(body), headers=auth_header(api_key))
    assert response.status == 413
    assert "1048576 bytes" in (await response.json())["error"]["message"]


async def test_a_body_over_the_limit_that_arrived_whole_gets_413(
    settings: Settings, api_key: str, redis: Redis
) -> None:
    """A small body is already buffered when the handler starts, and is taken without
    `request.read()` (meter/bodies.py): the limit holds there too, and nothing is written."""
    client = await start_client(settings.replace(max_body_bytes=1000))
    try:
        over = orjson.dumps([ev(f"w{i}") for i in range(30)])
        assert 1000 < len(over) < 4000
        response = await client.post("/v1/events", data=over, headers=auth_header(api_key))
        assert response.status == 413
        assert "1000 bytes" in (await response.json())["error"]["message"]
        under = orjson.dumps([ev(f"w{i}") for i in range(3)])
        response = await client.post("/v1/events", data=under, headers=auth_header(api_key))
        assert (await response.json())["accepted"] == 3
    finally:
        await client.close()
    assert sorted(e.id for e in await stream_events(redis, settings)) == ["w0", "w1", "w2"]


async def test_gzip_bodies_are_accepted(client: Client, api_key: str) -> None:
    body = gzip.compress(orjson.dumps([ev("gz1"), ev("gz2")]))
    response = await client.post(
        "/v1/events", data=body, headers={**auth_header(api_key), "Content-Encoding": "gzip"}
    )
    assert response.status == 200
    assert (await response.json())["accepted"] == 2


async def test_gzip_bomb_is_capped_at_the_decompressed_size(client: Client, api_key: str) -> None:
    body = gzip.compress(b"[" + b" " * (3 * 1024 * 1024) + b"]")
    response = await client.post(
        "/v1/events",
        data=io.BytesIO(body),
        headers={**auth_header(api_key), "Content-Encoding": "gzip"},
    )
    assert response.status == 413


async def test_corrupt_gzip_is_a_client_error(client: Client, api_key: str) -> None:
    response = await client.post(
        "/v1/events",
        data=b"\x1f\x8b\x08\x00garbage",
        headers={**auth_header(api_key), "Content-Encoding": "gzip"},
    )
    assert response.status == 400


@pytest.mark.parametrize(
    "header", [None, "Basic abc", "Bearer ", "Bearer mk_live_nope", "mk_live_raw"]
)
async def test_bad_credentials_get_401(client: Client, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = await client.post("/v1/events", data=orjson.dumps(ev("x")), headers=headers)
    assert response.status == 401
    assert (await response.json())["error"]["type"] == "authentication_error"


async def test_revoked_key_gets_401(client: Client, db: asyncpg.Connection) -> None:
    key = await auth.create_key(db, name="old", tenant="acme")
    key_id = await db.fetchval("SELECT id FROM api_keys WHERE key_hash = $1", auth.hash_key(key))
    await db.execute(queries.REVOKE_API_KEY, key_id)
    status, doc = await post(client, key, ev("x"))
    assert status == 401
    assert "revoked" in doc["error"]["message"]


async def test_unreachable_redis_gets_503_with_retry_after(
    settings: Settings, api_key: str
) -> None:
    from meter.embedded import free_port

    dead = settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = await start_client(dead)
    try:
        response = await client.post(
            "/v1/events", data=orjson.dumps(ev("x")), headers=auth_header(api_key)
        )
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["error"]["type"] == "unavailable"
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["checks"]["redis"].startswith("down")
    finally:
        await client.close()


async def test_over_high_water_gets_503_and_writes_nothing(
    settings: Settings, api_key: str, redis: Redis
) -> None:
    small = settings.replace(shards=1, stream_high_water=2)
    client = await start_client(small)
    try:
        assert (await post(client, api_key, [ev("a"), ev("b")]))[1]["accepted"] == 2
        response = await client.post(
            "/v1/events", data=orjson.dumps([ev("c")]), headers=auth_header(api_key)
        )
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        keys = Keys(small.redis_prefix)
        assert await redis.xlen(keys.stream(0)) == 2
        assert not await redis.exists(keys.dedupe(0, "acme", "c"))
        # Once the aggregator trims the stream, ingest resumes.
        await redis.xtrim(keys.stream(0), maxlen=0)
        assert client.app is not None
        await client.app[appkeys.COMMITTER].refresh_stream_lengths()
        assert (await post(client, api_key, [ev("c")]))[1]["accepted"] == 1
    finally:
        await client.close()


async def test_health_endpoints_and_metrics(client: Client, api_key: str) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"postgres": "ok", "redis": "ok"}
    await post(client, api_key, [ev("m1"), ev("m1"), ev("m2", value="x")])
    text = client.app[appkeys.METRICS].render().decode()  # served on the metrics port
    assert 'meter_events_total{reason="",status="accepted"} 1.0' in text
    assert 'meter_events_total{reason="",status="duplicate"} 1.0' in text
    assert 'meter_events_total{reason="invalid_value",status="rejected"} 1.0' in text
    assert "meter_ingest_request_seconds_bucket" in text
    assert "meter_committer_batch_events_count" in text
    assert 'meter_stream_length{shard="0"}' in text


async def test_batch_over_every_shard_answers_in_item_order(
    client: Client, api_key: str, redis: Redis, settings: Settings
) -> None:
    # A flush hands the script its events grouped by shard; the answers must still follow the
    # items, and each shard's stream must hold its own events, once, flagged as sent.
    ids = [f"s-{n}" for n in range(40)]
    assert len({shard_of("acme", i, settings.shards) for i in ids}) == settings.shards
    # A minute ago: well inside the dedupe window, so not flagged; a timestamp left to default
    # is flagged (redis_keys.may_repeat_forgotten).
    recent = int(time.time()) - 60
    body: list[dict[str, Any]] = []
    for n, event_id in enumerate(ids):
        body.append(ev(event_id, value=n, **({"timestamp": recent} if n % 3 == 0 else {})))
        if n % 5 == 0:
            body.append(ev(ids[n // 2]))  # a repeat of an earlier (or this) id
    status, doc = await post(client, api_key, body)
    assert status == 200
    seen: set[str] = set()
    expected = []
    for item in body:
        expected.append("duplicate" if item["id"] in seen else "accepted")
        seen.add(item["id"])
    assert [r["id"] for r in doc["results"]] == [item["id"] for item in body]
    assert [r["status"] for r in doc["results"]] == expected
    keys = Keys(settings.redis_prefix)
    for shard in range(settings.shards):
        entries = await redis.xrange(keys.stream(shard))
        mine = [(UsageEvent.decode(f[b"e"]), f.get(b"r")) for _, f in entries]
        assert all(shard_of("acme", e.id, settings.shards) == shard for e, _ in mine)
        for event, flag in mine:
            n = ids.index(event.id)
            assert event.value == str(n)
            assert flag == (None if n % 3 == 0 else b"1")
    stored = [e.id for e in await stream_events(redis, settings)]
    assert sorted(stored) == sorted(ids)
