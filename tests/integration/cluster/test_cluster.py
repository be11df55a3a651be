"""Ingest and aggregation against a 3-master Redis Cluster (METER_REDIS_URL = a list of nodes)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest
from redis.asyncio import Redis, RedisCluster

from aggregator.worker import Worker
from meter import limits, wiring
from meter.config import Settings
from meter.connections import redis_client
from meter.redis_keys import Keys, shard_of
from tests.conftest import start_client
from tests.integration.aggregator.conftest import (
    Client,
    make_events,
    post_events,
    rollups,
    stream_events,
)
from tests.integration.cluster.conftest import Cluster
from tests.integration.test_ingest import ev, post
from tests.unit.aggregator.reference import reference


@pytest.fixture
def cluster_settings(settings: Settings, cluster: Cluster) -> Settings:
    return settings.replace(redis_url=cluster.url, shards=8)


@pytest.fixture
async def cluster_client(cluster_settings: Settings) -> AsyncIterator[Client]:
    c = await start_client(cluster_settings)
    yield c
    await c.close()


@pytest.fixture
async def cluster_redis(cluster_settings: Settings) -> AsyncIterator[RedisCluster]:
    r = redis_client(cluster_settings.redis_url)
    assert isinstance(r, RedisCluster)
    yield r
    await r.aclose()


async def test_ingest_answers_per_item_and_lands_in_each_shards_node(
    cluster_client: Client, api_key: str, cluster: Cluster, cluster_settings: Settings
) -> None:
    ids = [f"c{i}" for i in range(300)]
    body = [ev(i) for i in ids[:200]] + [ev("c0"), {"customer": "cus_1"}]
    status, doc = await post(cluster_client, api_key, body)
    assert status == 200
    statuses = [r["status"] for r in doc["results"]]
    assert statuses == ["accepted"] * 200 + ["duplicate", "rejected"]

    # A second request overlapping the first: its old ids are duplicates, its new ones accepted.
    status, doc = await post(cluster_client, api_key, [ev(i) for i in ids[100:]])
    assert status == 200
    assert [r["status"] for r in doc["results"]] == ["duplicate"] * 100 + ["accepted"] * 100

    # Every shard's stream is on the master its hash tag maps to, holding exactly its events.
    keys = Keys(cluster_settings.redis_prefix)
    expected = Counter(shard_of("acme", i, cluster_settings.shards) for i in ids)
    owners = {}
    for shard in range(cluster_settings.shards):
        stream = keys.stream(shard)
        owners[shard] = port = cluster.master_of(stream)
        node = Redis(port=port)  # that one node, not the cluster client: no redirection
        try:
            assert await node.xlen(stream) == expected[shard]
            dedupe = keys.dedupe(
                shard, "acme", next(i for i in ids if shard_of("acme", i, 8) == shard)
            )
            assert await node.exists(dedupe) == 1
        finally:
            await node.aclose()
    assert len(set(owners.values())) > 1  # the shards really are spread over several masters


async def test_aggregator_folds_a_cluster_exactly_once(
    cluster_client: Client,
    cluster_redis: RedisCluster,
    api_key: str,
    cluster_settings: Settings,
    db: asyncpg.Connection,
) -> None:
    events = make_events(800, seed=7)
    await post_events(cluster_client, api_key, events)
    await post_events(cluster_client, api_key, events[:300])  # retries: all duplicates
    accepted = await stream_events(cluster_redis, cluster_settings)  # type: ignore[arg-type]
    assert len(accepted) == 800

    async with Worker(
        cluster_settings, cluster_redis, batch_size=100, attributor=wiring.attributor()
    ) as worker:
        assert await worker.drain() == 800
    async with Worker(cluster_settings, cluster_redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == 0  # trimmed and checkpointed: nothing folds twice

    assert await rollups(db) == reference(accepted)
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 800
    keys = Keys(cluster_settings.redis_prefix)
    for shard in range(cluster_settings.shards):
        assert await cluster_redis.xlen(keys.stream(shard)) == 0


async def test_hard_limits_are_kept_and_refreshed_on_a_cluster(
    cluster_client: Client, api_key: str, cluster_redis: RedisCluster, cluster_settings: Settings
) -> None:
    keys = Keys(cluster_settings.redis_prefix)
    until = int(time.time() * 1000) + 86_400_000
    await limits.block(
        cluster_redis, keys, "acme", "cus_1", "api_calls", rule_id="r", until_ms=until
    )
    _, doc = await post(cluster_client, api_key, [ev("blocked"), ev("free", customer="cus_2")])
    assert [r.get("reason", r["status"]) for r in doc["results"]] == ["over_limit", "accepted"]
    # Lifted: accepted once the background refresh (a pipeline over the cluster) has run.
    assert await limits.clear(
        cluster_redis, keys, "acme", "cus_1", "api_calls", rule_id="r", until_ms=until
    )
    n = 0
    while True:
        n += 1
        _, doc = await post(cluster_client, api_key, [ev(f"again-{n}")])
        if doc["results"][0]["status"] == "accepted":
            break
        await asyncio.sleep(0.02)
