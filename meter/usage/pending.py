"""Events accepted by ingest but not yet folded into the rollups: the pending part of the shard
streams.

Why the streams and not a per-bucket counter kept by ingest: the aggregator trims each stream up
to its checkpoint after every flush (aggregator/flush.py, step 9), so a stream *is* the pending
part; reading it leaves ingest's hot path alone and cannot drift from what the aggregator folds.
The read is capped (`MAX_PENDING_SCAN` entries over all shards) because it costs the global
backlog; a capped read says so (`pending_truncated`) and undercounts, never double-counts.

No double count: the streams are read *before* the Postgres snapshot, and an entry counts only
if its id is after its stream's checkpoint in that snapshot (see `api.usage`). Nor does a retry
that ingest accepted after its dedupe key expired (METER_DEDUPE_WINDOW), which the aggregator
will drop: such an entry carries the MAY_REPEAT_FIELD flag (meter/redis_keys.py says when), and a
flagged entry whose key is in usage_event_keys in the snapshot is not counted, nor an entry whose
id an earlier pending entry already has (`after_checkpoints`) — the aggregator's own rules.
Concurrent requests share one read (`PendingReads`), joining only a read sent after they arrived,
so each still sees every event accepted before it (docs/api.md, "Usage and projected invoice").
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import cast

from redis.asyncio.cluster import RedisCluster

from meter.coalescing import Batcher
from meter.connections import RedisClient
from meter.core.streams import stream_id_key, text
from meter.events import UsageEvent, event_key, json_text
from meter.redis_keys import MAY_REPEAT_FIELD, Keys

MAX_PENDING_SCAN = 2000


@dataclass(frozen=True, slots=True)
class PendingEntry:
    stream: str
    id: str
    event: UsageEvent
    # Ingest's flag: it may repeat an event folded or pending already (redis_keys.py).
    may_repeat: bool = False


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
    # (docs/performance.md). A payload is UsageEvent.encode(), which writes each string the
    # same way inside the array as alone, so an entry of one of these customers contains
    # json_text(customer) verbatim; entries without any are skipped undecoded. (A match
    # elsewhere in the payload is only a wasted decode: the check below still decides.)
    needles = [json_text(c) for c in wanted]
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
                flagged = MAY_REPEAT_FIELD in fields or MAY_REPEAT_FIELD.decode() in fields
                entries.append(PendingEntry(name, text(entry_id), event, flagged))
    return PendingRead(entries, scanned, truncated)


def keys_to_check(read: PendingRead | None) -> tuple[bytes, ...]:
    """The usage_event_keys keys the snapshot must look up: those of the flagged entries."""
    if read is None:
        return ()
    return tuple(event_key(e.event.tenant, e.event.id) for e in read.entries if e.may_repeat)


def after_checkpoints(
    read: PendingRead, checkpoints: dict[str, str], folded: Collection[bytes] = ()
) -> list[UsageEvent]:
    """The entries the aggregator will fold, as it decides: after their stream's checkpoint (no
    checkpoint: none folded), the first of their id in the stream, and — when flagged — with a
    key not in `folded` (the keys of `keys_to_check` found in the same snapshot)."""
    out = []
    ids: set[tuple[str, str]] = set()
    for entry in read.entries:
        done = checkpoints.get(entry.stream)
        if done is not None and stream_id_key(entry.id) <= stream_id_key(done):
            continue
        event = entry.event
        seen = (event.tenant, event.id)
        if seen in ids or (entry.may_repeat and event_key(event.tenant, event.id) in folded):
            continue
        ids.add(seen)
        out.append(event)
    return out
