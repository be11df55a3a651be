"""METER_REDIS_WAIT_REPLICAS in a cluster: an acknowledged event is already on a replica, and a
master whose replica does not answer gets its requests refused (503) until it does."""

from __future__ import annotations

import os
import signal

from redis import Redis

from meter.config import Settings
from meter.redis_keys import Keys, shard_of
from tests.conftest import start_client
from tests.integration.cluster.conftest import Cluster
from tests.integration.test_ingest import ev, post

SHARDS = 8


def replica_of(master: int) -> int:
    with Redis(port=master, socket_timeout=2) as r:
        info = r.info("replication")
    return int(info["slave0"]["port"])


def replicated_entries(cluster: Cluster, keys: Keys, master: int) -> int:
    """Stream entries of this master's shards as its replica holds them."""
    with Redis(port=replica_of(master), socket_timeout=2) as r:
        r.execute_command("READONLY")  # a cluster replica answers reads of its slots only so
        return sum(
            int(r.xlen(keys.stream(s)))
            for s in range(SHARDS)
            if cluster.master_of(keys.stream(s)) == master
        )


def ids_on(cluster: Cluster, keys: Keys, master: int, n: int, *, prefix: str) -> list[str]:
    """`n` event ids of tenant acme whose shard's stream lives on `master` (or not, if n < 0)."""
    out: list[str] = []
    i = 0
    while len(out) < abs(n):
        event_id = f"{prefix}{i}"
        on_master = cluster.master_of(keys.stream(shard_of("acme", event_id, SHARDS))) == master
        if on_master == (n > 0):
            out.append(event_id)
        i += 1
    return out


async def test_acknowledged_means_replicated_and_a_silent_replica_means_503(
    settings: Settings, cluster_with_replicas: Cluster, api_key: str
) -> None:
    cluster = cluster_with_replicas
    own = settings.replace(
        redis_url=cluster.url, shards=SHARDS, redis_wait_replicas=1, redis_wait_timeout_s=0.2
    )
    keys = Keys(own.redis_prefix)
    master = cluster.master_of(keys.stream(0))
    client = await start_client(own)
    try:
        # 1. Acknowledged: the master's replica already holds every accepted entry.
        first = ids_on(cluster, keys, master, 20, prefix="a")
        status, doc = await post(client, api_key, [ev(i, value=1) for i in first])
        assert status == 200, doc
        assert {r["status"] for r in doc["results"]} == {"accepted"}
        assert replicated_entries(cluster, keys, master) == len(first)

        # 2. The replica stops answering: this master's commits are refused, others' are not.
        stuck = ids_on(cluster, keys, master, 10, prefix="b")
        elsewhere = ids_on(cluster, keys, master, -10, prefix="c")
        replica = cluster.procs[replica_of(master)]
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            status, doc = await post(client, api_key, [ev(i, value=1) for i in stuck])
            assert status == 503, doc
            status, doc = await post(client, api_key, [ev(i, value=1) for i in elsewhere])
            assert status == 200, doc
        finally:
            os.kill(replica.pid, signal.SIGCONT)

        # 3. Once it is back, the retry is acknowledged: the refused events had landed on the
        #    master, so they are duplicates now, and the replica has caught up with them.
        status, doc = await post(client, api_key, [ev(i, value=1) for i in stuck])
        assert status == 200, doc
        assert {r["status"] for r in doc["results"]} == {"duplicate"}
        assert replicated_entries(cluster, keys, master) == len(first) + len(stuck)
    finally:
        await client.close()
