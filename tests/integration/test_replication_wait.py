"""METER_REDIS_WAIT_REPLICAS on a single Redis: a commit fewer replicas acknowledged is a 503."""

from __future__ import annotations

from redis.asyncio import Redis

from meter.config import Settings
from tests.conftest import start_client
from tests.integration.test_ingest import ev, post


async def test_a_commit_no_replica_acknowledged_is_a_503_and_its_retry_a_duplicate(
    settings: Settings, redis: Redis, api_key: str
) -> None:
    replicas = int((await redis.info("replication"))["connected_slaves"])
    events = [ev(f"w{i}", value=1) for i in range(5)]

    # More replicas than this Redis has: WAIT can never be satisfied.
    waiting = await start_client(
        settings.replace(redis_wait_replicas=replicas + 1, redis_wait_timeout_s=0.01)
    )
    try:
        status, doc = await post(waiting, api_key, events)
    finally:
        await waiting.close()
    assert status == 503, doc

    # The master did apply the commit: a retry (here without WAIT) finds every id taken, so
    # the events count once, from the first attempt.
    plain = await start_client(settings)
    try:
        status, doc = await post(plain, api_key, events)
    finally:
        await plain.close()
    assert status == 200, doc
    assert [r["status"] for r in doc["results"]] == ["duplicate"] * len(events)
