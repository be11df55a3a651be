"""Shard leases: session advisory locks held on one dedicated Postgres connection.

A worker holds `pg_try_advisory_lock(class, shard)` for each shard it works; the lock dies with
the connection, so when a worker dies its shards are free at once and others take them on their
next tick. Workers also hold one "member" lock each, so each can count the live workers and keep
about shards / workers leases: N workers split the shards.

Leases are for efficiency, not correctness: the checkpoint compare-and-set in flush.py keeps two
workers that somehow work one shard from double counting.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable

import asyncpg

from aggregator import queries
from meter.connections import PG_ERRORS

MAX_MEMBERS = 1024


def lock_class(prefix: str, kind: str) -> int:
    """A positive int4 class id per key prefix and kind, so deployments sharing a database (or
    tests sharing a server) never take each other's locks."""
    return zlib.crc32(f"meter:{prefix}:{kind}".encode()) & 0x7FFFFFFF


def fair_share(shards: int, members: int) -> int:
    """How many leases one of `members` workers should hold."""
    return math.ceil(shards / max(members, 1))


class Leases:
    """The leases of one worker, on its own connection (never a pooled one: a pool's reset
    would unlock them)."""

    def __init__(self, conn: asyncpg.Connection, prefix: str, shards: int) -> None:
        self.conn = conn
        self.shards = shards
        self.shard_class = lock_class(prefix, "shard")
        self.member_class = lock_class(prefix, "member")
        self.member: int | None = None
        self.held: set[int] = set()

    async def join(self) -> None:
        """Take a member slot, so that other workers count this one."""
        for slot in range(MAX_MEMBERS):
            if await self.conn.fetchval(queries.TRY_LOCK, self.member_class, slot):
                self.member = slot
                return

    async def members(self) -> int:
        count: int = await self.conn.fetchval(queries.COUNT_LOCKS, self.member_class)
        return count

    async def try_acquire(self, shard: int) -> bool:
        if shard in self.held:
            return True
        if await self.conn.fetchval(queries.TRY_LOCK, self.shard_class, shard):
            self.held.add(shard)
            return True
        return False

    async def release(self, shard: int) -> None:
        if shard in self.held:
            self.held.discard(shard)
            await self.conn.fetchval(queries.UNLOCK, self.shard_class, shard)

    async def alive(self) -> bool:
        """Whether the lease connection (and so every lease) still stands."""
        if self.conn.is_closed():
            self.held.clear()
            return False
        try:
            await self.conn.fetchval(queries.PING)
        except PG_ERRORS:
            self.held.clear()
            return False
        return True

    async def rebalance(self) -> None:
        """Keep the fair share: give back extras, take free shards (those of dead workers)."""
        target = fair_share(self.shards, await self.members())
        for shard in sorted(self.held, reverse=True)[: max(len(self.held) - target, 0)]:
            await self.release(shard)
        # Start at a different shard per member, so that joining workers don't all race for 0.
        start = (self.member or 0) * target
        for n in range(self.shards):
            if len(self.held) >= target:
                break
            await self.try_acquire((start + n) % self.shards)

    async def acquire_all_free(self, among: Iterable[int] | None = None) -> None:
        """Take every shard no one holds, of `among` (default: all; the `--once` mode)."""
        for shard in range(self.shards) if among is None else among:
            await self.try_acquire(shard)
