"""A loop of Redis calls stops when cancelled, at whatever point of a call the cancellation
lands. redis-py writes through `asyncio.wait_for`, which on Python 3.11 loses a cancellation
that arrives as the write completes (python/cpython#86296): a single `cancel()` then leaves the
loop running and `await task` waiting forever, as a shutdown of the ingest server did."""

from __future__ import annotations

import asyncio
import random

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from meter.connections import REDIS_ERRORS, redis_client
from meter.tasks import cancel_and_wait


async def test_a_redis_polling_loop_always_stops(redis_url: str, redis_prefix: str) -> None:
    redis = redis_client(redis_url, socket_timeout=5.0, retry=Retry(NoBackoff(), 0))
    rng = random.Random(7)
    try:
        for _ in range(50):

            async def poll() -> None:
                while True:  # as the committer's stream-length poller
                    try:
                        async with redis.pipeline(transaction=False) as pipe:
                            for shard in range(4):
                                pipe.xlen(f"{redis_prefix}:{shard}")
                            await pipe.execute()
                    except REDIS_ERRORS:
                        pass
                    await asyncio.sleep(0)

            task = asyncio.create_task(poll())
            for _ in range(rng.randint(1, 40)):  # land the cancellation anywhere in a call
                await asyncio.sleep(0)
            await asyncio.wait_for(cancel_and_wait(task), 10)
            assert task.cancelled()
    finally:
        await redis.aclose()
