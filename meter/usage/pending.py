"""Events accepted by ingest but not yet folded into the rollups: the pending part of the shard
streams.

Why the streams and not a per-bucket counter kept by ingest: the aggregator trims each stream up
to its checkpoint after every flush (aggregator/flush.py, step 9), so a stream *is* the pending
part; reading it leaves ingest's hot path alone and cannot drift from what the aggregator folds.
The read is capped (`MAX_PENDING_SCAN` entries over all shards) because it costs the global
backlog; a capped read says so (`pending_truncated`) and undercounts, never double-counts.

No double count: the streams are read *before* the Postgres snapshot, and an entry counts only
if its id is after its stream's checkpoint in that snapshot (see `api.usage`). Concurrent
requests share one read (`PendingReads`), joining only a read sent after they arrived, so each
still sees every event accepted before it (docs/api.md, "Usage and projected invoice").
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import cast

import orjson
from redis.asyncio.cluster import RedisCluster

from meter.coalescing import Batcher
from meter.connections import RedisClient
from meter.core.streams import stream_id_key, text
from meter.events import UsageEvent
from meter.redis_keys import Keys

MAX_PENDING_SCAN = 2000


@dataclass(frozen=True, slots=True)
class PendingEntry:
    stream: str
    id: str
    event: UsageEvent


@dataclass(frozen=True, slots=True)
class PendingRead:
    entries: list[PendingEntry]
    scanned: int
    truncated: bool


# What one read returns: (stream name, its entries) for every non-empty stream.
StreamsRead = list[tuple[str, list[tuple[bytes, dict[bytes | str, bytes]]]]]


def streams(keys: Keys, shards: int) -> list[str]:
    return [keys.stream(shard) for shard in range(shards)]


async def _read_streams(redis: RedisClient, names: list[str], per_stream: int) -> StreamsRead:
    """The first `per_stream` entries of each stream, oldest first (empty streams left out)."""
    if isinstance(redis, RedisCluster):
        # Keys of one command must share a slot in a cluster: one XRANGE per stream.
        async with redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.xrange(name, min="-", max="+", count=per_stream)
            results = await pipe.execute()
        return list(zip(names, results, strict=True))
    # Optimisation: one XREAD over every stream instead of a pipeline of one XRANGE each (the
    # pipeline's per-command packing and parsing was a quarter of a usage request's CPU). From
    # id 0 it returns the same entries as XRANGE - +, and leaves empty streams out.
    found = cast(
        "list[tuple[bytes, list[tuple[bytes, dict[bytes | str, bytes]]]]] | None",
        await redis.xread(dict.fromkeys(names, "0-0"), count=per_stream),  # RESP2 shape
    )
    return [(text(name), entries) for name, entries in found or []]


class PendingReads:
    """The pending part of the streams, read once for all the usage requests waiting for it
    (a `Batcher`): at once when no read is in flight, else as soon as the one in flight
    returns, together with every request that arrived meanwhile. So under load one XREAD (and
    its parsing) serves many requests, and a request waits at most for the read in flight plus
    its own (measured: docs/performance.md).

    Use as `async with PendingReads(redis, names) as reads:` — the block runs the batcher;
    leaving it cancels any read still wanted, so that no request waits forever."""

    def __init__(self, redis: RedisClient, names: list[str]) -> None:
        self._redis = redis
        self.names = names  # the shard streams, in shard order (their checkpoints go with them)
        self._per_stream = max(1, MAX_PENDING_SCAN // len(names))
        self._batcher: Batcher[None, StreamsRead] = Batcher(self._read_for)

    async def __aenter__(self) -> PendingReads:
        await self._batcher.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._batcher.__aexit__(*exc)

    async def read(self, tenant: str, customers: Collection[str]) -> PendingRead:
        """These customers' entries (oldest first, at most MAX_PENDING_SCAN scanned)."""
        return _scan(await self._batcher(None), self._per_stream, tenant, customers)

    async def _read_for(self, waiting: list[None]) -> list[StreamsRead]:
        # The read is the same for every customer: each request filters it (`_scan`).
        streams = await _read_streams(self._redis, self.names, self._per_stream)
        return [streams] * len(waiting)


def _scan(
    streams: StreamsRead, per_stream: int, tenant: str, customers: Collection[str]
) -> PendingRead:
    """The entries of these customers in a read of the streams."""
    entries: list[PendingEntry] = []
    scanned, truncated = 0, False
    wanted = set(customers)
    # Optimisation: the scan holds every customer's entries, and decoding each is costly
    # (docs/performance.md). A payload is UsageEvent.encode(): orjson writes each
    # string the same way inside the array as alone, so an entry of one of these customers
    # contains orjson.dumps(customer) verbatim; entries without any are skipped undecoded. (A
    # match elsewhere in the payload is only a wasted decode: the check below still decides.)
    needles = [orjson.dumps(c) for c in wanted]
    for name, batch in streams:
        scanned += len(batch)
        truncated = truncated or len(batch) >= per_stream
        for entry_id, fields in batch:
            payload = fields.get(b"e") if b"e" in fields else fields.get("e")
            if payload is None:
                continue
            if isinstance(payload, bytes) and not any(n in payload for n in needles):
                continue
            event = UsageEvent.decode(payload)
            if event.tenant == tenant and event.customer in wanted:
                entries.append(PendingEntry(name, text(entry_id), event))
    return PendingRead(entries, scanned, truncated)


def after_checkpoints(read: PendingRead, checkpoints: dict[str, str]) -> list[UsageEvent]:
    """The entries not folded yet: after their stream's checkpoint (no checkpoint: none folded)."""
    out = []
    for entry in read.entries:
        done = checkpoints.get(entry.stream)
        if done is None or stream_id_key(entry.id) > stream_id_key(done):
            out.append(entry.event)
    return out
