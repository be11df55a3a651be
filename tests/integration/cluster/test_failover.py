"""Failover: kill -9 one master of a replicated cluster while ingest runs; nothing acknowledged is
lost or counted twice once the aggregator has drained the streams into Postgres."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import orjson

from aggregator.worker import Worker
from meter import wiring
from meter.config import Settings
from meter.connections import redis_client
from meter.redis_keys import Keys
from tests.conftest import start_client
from tests.integration.aggregator.conftest import Client
from tests.integration.cluster.conftest import Cluster, cluster_info, wait_until
from tests.integration.test_ingest import auth_header, ev

SENDERS = 4
BATCHES_PER_SENDER = 30
BATCH = 40


class Ledger:
    """What the API answered, per event id, across every attempt."""

    def __init__(self) -> None:
        self.sent: set[str] = set()
        self.accepted: list[str] = []  # every `accepted` answer (an id twice would be a bug)
        self.unavailable = 0  # 503s (retried with the same ids)


async def send(client: Client, key: str, ids: list[str], ledger: Ledger) -> None:
    """Post one batch until it is answered 200, retrying 503s and dropped connections."""
    ledger.sent.update(ids)
    body = orjson.dumps([ev(i, value=1) for i in ids])
    for _ in range(600):  # bounded: ~60 s of 503s at most
        try:
            response = await client.post("/v1/events", data=body, headers=auth_header(key))
        except OSError:
            await asyncio.sleep(0.1)
            continue
        if response.status == 503:
            ledger.unavailable += 1
            await asyncio.sleep(0.1)
            continue
        assert response.status == 200, await response.text()
        doc = await response.json()
        for result in doc["results"]:
            assert result["status"] in ("accepted", "duplicate"), result
            if result["status"] == "accepted":
                ledger.accepted.append(result["id"])
        return
    raise AssertionError(f"batch {ids[0]}… never answered 200")


async def test_acknowledged_events_survive_a_master_failover_exactly_once(
    settings: Settings, cluster_with_replicas: Cluster, api_key: str, db: asyncpg.Connection
) -> None:
    cluster = cluster_with_replicas
    own = settings.replace(redis_url=cluster.url, shards=8)
    victim_stream = Keys(own.redis_prefix).stream(0)
    victim = cluster.master_of(victim_stream)
    client = await start_client(own)
    ledger = Ledger()
    killed = asyncio.Event()

    async def sender(n: int) -> None:
        rng = random.Random(n)
        for b in range(BATCHES_PER_SENDER):
            ids = [f"s{n}-{b}-{i}" for i in range(BATCH)]
            if ledger.sent:  # ~10% retries of ids sent before, by anyone
                ids += rng.sample(sorted(ledger.sent), min(4, len(ledger.sent)))
            await send(client, api_key, ids, ledger)
            if n == 0 and b == BATCHES_PER_SENDER // 3:
                cluster.kill(victim)  # kill -9 mid-stream; the other senders keep posting
                killed.set()

    try:
        await asyncio.gather(*(sender(n) for n in range(SENDERS)))
        assert killed.is_set()
        live = [port for port in cluster.ports if cluster.alive(port)]
        wait_until(
            lambda: (
                all(cluster_info(p)["cluster_state"] == "ok" for p in live)
                and cluster.master_of(victim_stream) != victim
            ),
            "the victim's replica to take over its slots",
        )
    finally:
        await client.close()

    redis = redis_client(cluster.url)  # the surviving nodes
    try:
        async with Worker(own, redis, attributor=wiring.attributor()) as worker:
            await worker.drain()
    finally:
        await redis.aclose()

    rows = await db.fetch("SELECT event_id, count(*) AS n FROM usage_events GROUP BY event_id")
    stored = {r["event_id"]: r["n"] for r in rows}
    assert len(ledger.accepted) == len(set(ledger.accepted)), "an id was accepted twice"
    missing = set(ledger.accepted) - stored.keys()
    assert not missing, f"{len(missing)} acknowledged events lost in the failover"
    assert all(n == 1 for n in stored.values()), "an event was stored twice"
    # Stored but never answered `accepted`: only events that landed while their request got a 503.
    assert stored.keys() <= ledger.sent
    assert len(stored) - len(ledger.accepted) <= ledger.unavailable * (BATCH + 4)
    total = await db.fetchval("SELECT coalesce(sum(event_count), 0) FROM usage_rollups")
    assert total == len(stored)
