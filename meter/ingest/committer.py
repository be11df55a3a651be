"""The group committer: coalesces concurrent ingest requests into one Redis round trip.

Batching is natural, without a timer: while a flush is in flight requests queue, and the next
flush takes all of them (up to `commit_max_events`), so an idle server flushes a lone request at
once (docs/design.md, docs/performance.md).

A flush is one atomic EVALSHA of INGEST_SCRIPT on a single Redis, or one per shard on Redis
Cluster (a script's keys must share a slot), all sent at once. A request gets a 503 if any of its
calls failed, its connection broke with the outcome unknown, or (METER_REDIS_WAIT_REPLICAS = r > 0)
its `WAIT r` saw fewer than r replicas. On a single Redis the 503 means nothing was written; in
cluster mode the events of the shards that succeeded were written; in every case the retry
with the same ids answers `duplicate` for what landed, so each event counts once
(docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

from redis.asyncio import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from meter.connections import REDIS_ERRORS, RedisClient
from meter.errors import Unavailable
from meter.metrics import Metrics
from meter.redis_keys import INGEST_SCRIPT, Keys
from meter.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class NotReplicated(RedisError):
    """A commit that fewer replicas than METER_REDIS_WAIT_REPLICAS acknowledged in time."""


class Item(NamedTuple):
    """One event to commit: its shard, dedupe key, flag (1: it may repeat an event whose dedupe
    key expired, redis_keys.may_repeat_forgotten) and stream payload."""

    shard: int
    dedupe_key: str
    may_repeat: int
    payload: bytes


# An Item from a tuple in field order, without the NamedTuple's Python-level __new__ (a third
# of its cost, built once per event).
new_item = functools.partial(tuple.__new__, Item)


@dataclass(slots=True)
class _Request:
    items: Sequence[Item]
    future: asyncio.Future[list[bool]]


class Committer:
    """Accepts `commit(items)` from many concurrent handlers; answers per item accepted or not."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        shards: int,
        max_events: int,
        high_water: int,
        metrics: Metrics,
        dedupe_ttl_s: int,
        max_inflight: int = 2,
        wait_replicas: int = 0,
        wait_timeout_s: float = 0.1,
    ) -> None:
        self._redis = redis
        self._ttl_s = dedupe_ttl_s
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = max(1, round(wait_timeout_s * 1000))
        # A cluster takes one call per shard (a script's keys must share a slot).
        self._per_shard = isinstance(redis, RedisCluster)
        self._keys = keys
        self._shards = shards
        self._max_events = max_events
        self._high_water = high_water
        self._metrics = metrics
        self._queue: deque[_Request] = deque()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(max_inflight)
        self._sha: str | None = None
        self._stream_len = [0] * shards
        self._tasks: list[asyncio.Task[None]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Load the script and start the flush loop and the stream-length poller."""
        with contextlib.suppress(*REDIS_ERRORS):
            await self._load_script()
            await self.refresh_stream_lengths()
        self._tasks = [
            asyncio.create_task(self._run(), name="committer"),
            asyncio.create_task(self._poll_lengths(), name="stream-length-poller"),
        ]

    async def stop(self) -> None:
        """Flush what is queued, then stop."""
        await cancel_and_wait(*self._tasks)
        if self._queue:
            await self._flush(self._take())
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)

    def over_high_water(self, shards: set[int]) -> bool:
        """True when a shard the request would write to is past its high-water mark.

        Checked before anything is queued, so a refused request has written nothing.
        """
        return any(self._stream_len[s] >= self._high_water for s in shards)

    async def commit(self, items: Sequence[Item]) -> list[bool]:
        """Commit items; per item True = accepted (appended), False = duplicate.

        Raises Unavailable when Redis could not be reached; see the module doc for what was
        written in that case.
        """
        if not items:
            return []
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(items, future))
        self._wakeup.set()
        return await future

    def _take(self) -> list[_Request]:
        taken: list[_Request] = []
        count = 0
        while self._queue and (not taken or count + len(self._queue[0].items) <= self._max_events):
            request = self._queue.popleft()
            taken.append(request)
            count += len(request.items)
        if not self._queue:
            self._wakeup.clear()
        return taken

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            await self._slots.acquire()
            batch = self._take()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._flush_and_release(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush_and_release(self, batch: list[_Request]) -> None:
        try:
            await self._flush(batch)
        except Exception:
            # Never leave a request waiting forever. redis-py's cluster client can fail with
            # errors of its own (an AttributeError on a connection another task just dropped)
            # while a node fails over; what was written is then as unknown as after a 503.
            log.exception("redis commit failed unexpectedly")
            for request in batch:
                _unavailable(request)
        finally:
            self._slots.release()

    def _script_call(
        self, items: list[Item]
    ) -> tuple[list[int], list[str], list[str | bytes | int], list[int]]:
        """INGEST_SCRIPT's KEYS and ARGV for `items`: (shards, keys, args, order), where the
        script sees the events grouped by shard and its k-th status is that of items[order[k]]."""
        groups: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            group = groups.get(item.shard)
            if group is None:
                groups[item.shard] = [i]
            else:
                group.append(i)
        shards = list(groups)
        order = [i for group in groups.values() for i in group]
        stream = self._keys.stream
        keys = [stream(shard) for shard in shards]
        keys += [items[i].dedupe_key for i in order]
        args: list[str | bytes | int] = [len(shards), self._ttl_s]
        args.append(bytes([48 + items[i].may_repeat for i in order]))  # b"0" / b"1" per event
        args += [len(group) for group in groups.values()]
        args += [items[i].payload for i in order]
        return shards, keys, args, order

    async def _flush(self, batch: list[_Request]) -> None:
        if self._per_shard:
            await self._flush_per_shard(batch)
            return
        items = [item for request in batch for item in request.items]
        shards, keys, args, order = self._script_call(items)
        started = time.perf_counter()
        try:
            reply = await self._call(keys, args)
        except REDIS_ERRORS as exc:
            log.warning("redis commit failed", extra={"error": repr(exc)})
            for request in batch:
                _unavailable(request)
            return
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        self._metrics.commit_batch_events.observe(len(items))
        for position, shard in enumerate(shards):
            self._stream_len[shard] = reply[position]
        accepted = [False] * len(items)
        for k, i in enumerate(order, len(shards)):
            accepted[i] = reply[k] == 1
        done = 0
        for request in batch:
            statuses = accepted[done : done + len(request.items)]
            done += len(request.items)
            if not request.future.done():
                request.future.set_result(statuses)

    async def _flush_per_shard(self, batch: list[_Request]) -> None:
        """Redis Cluster: one call per shard, all at once (see the module doc for a 503)."""
        by_shard: dict[int, list[Item]] = {}
        spots: list[list[tuple[int, int]]] = []  # per request, per item: (shard, reply index)
        for request in batch:
            where = []
            for item in request.items:
                items = by_shard.setdefault(item.shard, [])
                items.append(item)
                # One shard per call: the reply is [stream length, status_1, ..], in item order.
                where.append((item.shard, len(items)))
            spots.append(where)
        calls = {shard: self._script_call(items) for shard, items in by_shard.items()}
        started = time.perf_counter()
        shards = list(calls)
        outcomes = await asyncio.gather(
            *(self._call(calls[shard][1], calls[shard][2]) for shard in shards),
            return_exceptions=True,
        )
        replies: dict[int, list[int]] = {}
        for shard, outcome in zip(shards, outcomes, strict=True):
            if isinstance(outcome, Exception):  # REDIS_ERRORS, or the cluster client's own bugs
                log.warning("redis commit failed", extra={"shard": shard, "error": repr(outcome)})
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                replies[shard] = outcome
                self._stream_len[shard] = outcome[0]
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        self._metrics.commit_batch_events.observe(sum(len(r.items) for r in batch))
        for request, where in zip(batch, spots, strict=True):
            if all(shard in replies for shard, _ in where):
                if not request.future.done():
                    request.future.set_result([replies[s][k] == 1 for s, k in where])
            else:
                _unavailable(request)

    async def _call(self, keys: list[str], args: list[str | bytes | int]) -> list[int]:
        sha = self._sha or await self._load_script()
        try:
            return await self._call_once(sha, keys, args)
        except NoScriptError:
            # Redis lost its script cache (restart, failover; in a cluster, a promoted replica
            # may never have had it): the call did nothing, so loading the script (on every
            # master, in a cluster) and calling again is safe.
            sha = await self._load_script()
            return await self._call_once(sha, keys, args)

    async def _call_once(
        self, sha: str, keys: list[str], args: list[str | bytes | int]
    ) -> list[int]:
        if not self._wait_replicas:
            return cast(list[int], await self._redis.evalsha(sha, len(keys), *keys, *args))
        # METER_REDIS_WAIT_REPLICAS: WAIT answers how many replicas have every write made so
        # far *on its connection*, so it must follow the script on the same connection: a
        # pipeline sends both on one connection (in a cluster, one of the node that serves the
        # script's slot, which WAIT is pinned to; no redirection is followed, so the script
        # can never run on another node than the WAIT).
        wait = ("WAIT", self._wait_replicas, self._wait_timeout_ms)
        if isinstance(self._redis, RedisCluster):
            node = self._redis.get_node_from_key(keys[0])
            cluster_pipe = self._redis.pipeline(transaction=False)
            # (The cluster pipeline refuses its `evalsha` helper; the raw command routes by
            # the script's keys all the same.)
            cluster_pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
            cluster_pipe.execute_command(*wait, target_nodes=node)
            reply, acked = await cluster_pipe.execute(allow_redirections=False)
        else:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.evalsha(sha, len(keys), *keys, *args)
                pipe.execute_command(*wait)
                reply, acked = await pipe.execute()
        if int(acked) < self._wait_replicas:
            # Applied on the master, not yet on enough replicas: answered like a lost reply
            # (503). The retry is answered `duplicate` for what landed here, or `accepted` if
            # a failover lost it meanwhile — counted once either way.
            raise NotReplicated(
                f"{int(acked)} of {self._wait_replicas} replica(s) acknowledged the commit"
                f" within {self._wait_timeout_ms} ms"
            )
        return cast(list[int], reply)

    async def _load_script(self) -> str:
        self._sha = str(await self._redis.script_load(INGEST_SCRIPT))
        return self._sha

    async def refresh_stream_lengths(self) -> None:
        """Read every shard's stream length (the aggregator trims them; ingest only grows them)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in range(self._shards):
                pipe.xlen(self._keys.stream(shard))
            lengths = await pipe.execute()
        for shard, length in enumerate(lengths):
            self._stream_len[shard] = int(length)
            self._metrics.stream_length.labels(shard=str(shard)).set(length)

    async def _poll_lengths(self, every_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.refresh_stream_lengths()
            except REDIS_ERRORS as exc:
                log.warning("stream length poll failed", extra={"error": repr(exc)})


def _unavailable(request: _Request) -> None:
    if not request.future.done():
        request.future.set_exception(
            Unavailable("the event buffer (Redis) is unavailable", retry_after=1)
        )
