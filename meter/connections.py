"""Redis connections for the hot path, and the one factory every process builds its client with;
the API's pooled Postgres connections."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeAlias, cast
from urllib.parse import urlsplit

import asyncpg
import hiredis
from redis.asyncio import Connection, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import RedisClusterException, RedisError

from meter.errors import ConfigError

log = logging.getLogger(__name__)

# How long closing a pool waits for the connections still held (see close_pool).
POOL_CLOSE_TIMEOUT_S = 10.0

# What `redis_client` returns: a single Redis, or a Redis Cluster client (METER_REDIS_URL with
# a comma list of nodes). Both speak every command meter uses; the committer tells them apart.
RedisClient: TypeAlias = Redis | RedisCluster

# Errors of either client: the cluster client raises RedisClusterException, which is not a
# RedisError, when it cannot map a slot to a node (during a failover, or with no node reachable).
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException)

# Errors of Postgres, or of the way to it, that a later try on a fresh connection may not meet:
# the server restarting or out of reach (OSError, TimeoutError), any server error, and a
# connection terminated under a pool: InterfaceError ("connection is closed") or, when the
# termination reached asyncpg between two queries, InternalClientError ("cannot switch to
# state ...") on the next one. The pool replaces such a connection.
PG_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


class HiredisPackingConnection(Connection):
    """A Connection that packs commands with hiredis (C) instead of redis-py's Python packer.

    redis-py's asyncio client packs every argument in Python; a group-commit flush carries
    thousands of arguments, and that packing was the largest single cost of ingest.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            # Like redis-py: "SCRIPT LOAD" is two protocol words.
            args = (*args[0].encode().split(), *args[1:])
        return [hiredis.pack_command(args)]

    def pack_commands(self, commands: Any) -> list[bytes]:
        return [b"".join(self.pack_command(*cmd)[0] for cmd in commands)]


def is_cluster_url(url: str) -> bool:
    """A comma list of nodes (`redis://h1:p1,redis://h2:p2`) means Redis Cluster."""
    return "," in url


def redis_client(url: str, **options: Any) -> RedisClient:
    """The Redis client for METER_REDIS_URL.

    - `redis://host:port/db` (or `rediss://`, `unix://`): one Redis; plain redis:// connections
      use the hiredis packer.
    - `redis://h1:p1,redis://h2:p2,...`: Redis Cluster. The listed nodes are only where
      discovery starts (any reachable one will do); credentials and TLS come from the first
      entry; the database must be 0 (or absent), as Redis Cluster has only one. `max_connections`
      then counts per node.
    """
    if is_cluster_url(url):
        first, *rest = [part.strip() for part in url.split(",") if part.strip()]
        nodes = [ClusterNode(*_host_port(part)) for part in rest]
        return RedisCluster.from_url(first, startup_nodes=nodes, **options)
    if url.startswith("redis://"):
        options.setdefault("connection_class", HiredisPackingConnection)
    return Redis.from_url(url, **options)


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"redis://{url}")
    if parts.hostname is None:
        raise ConfigError(f"METER_REDIS_URL: not a Redis node URL: {url!r}")
    return parts.hostname, parts.port or 6379


class PooledConnection(asyncpg.Connection):
    """A connection of the API's pool, released without asyncpg's reset statement.

    Optimisation: asyncpg resets a connection on release with one more round trip (unlock all
    advisory locks, CLOSE ALL, UNLISTEN *, RESET ALL; cost: docs/performance.md). Nothing
    served from this pool leaves such session state (it takes no advisory lock, opens no cursor
    outside a transaction, never LISTENs or SETs). An open transaction is still rolled back on
    release: asyncpg does that before, and regardless of, this query."""

    def get_reset_query(self) -> str:
        return ""


@contextlib.asynccontextmanager
async def acquire(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection borrowed from `pool`, typed as one: the pool's proxy forwards every method."""
    async with pool.acquire() as proxy:
        yield cast(asyncpg.Connection, proxy)


async def close_pool(
    pool: asyncpg.Pool, name: str, timeout_s: float = POOL_CLOSE_TIMEOUT_S
) -> None:
    """Close `pool` at shutdown. asyncpg waits, with no end, for every connection still held; a
    task that never gives one back (stuck on a lock or a peer) would hold the process's exit,
    so past `timeout_s` the pool is terminated and those connections closed under their holders
    (an open transaction of theirs rolls back)."""
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except TimeoutError:
        log.warning(
            "postgres pool terminated: a connection was still held at shutdown",
            extra={"pool": name, "waited_s": timeout_s},
        )
        pool.terminate()
