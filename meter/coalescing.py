"""`Batcher`: one call of a batch function answers every caller waiting for it.

The usage API's requests share one read of the pending events and one Postgres statement for
their usage through this (meter/usage/), instead of a round trip each.

A caller joins only a batch *sent after it arrived*, so the batch runs entirely after the call
began and the caller sees everything that happened before it, as if it had run alone.

Why not a pool of connections each caller waits for: asyncio's queues (asyncpg's pool acquire
among them) are not fair. A woken caller runs only on the loop's next turn, and one arriving in
between takes the connection first, so under load some usage requests starved (p99 measured in
docs/performance.md). A batch answers its callers together, and the next takes everyone who
arrived meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from meter.tasks import cancel_and_wait

A = TypeVar("A")
R = TypeVar("R")


class Batcher(Generic[A, R]):
    """`await batcher(arg)` → `run(args)[i]`, where `args` are the arguments of the calls that
    arrived while the previous batch was in flight (or alone, when none was), in arrival order.
    If `run` raises, every call of that batch raises it; the next batch runs anyway.

    Use as `async with Batcher(run) as batcher:` — the block runs the task that sends batches;
    leaving it cancels every call still waiting, so none waits forever."""

    def __init__(self, run: Callable[[list[A]], Awaitable[Sequence[R]]]) -> None:
        self._run = run
        self._waiting: list[tuple[A, asyncio.Future[R]]] = []
        self._wanted = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Batcher[A, R]:
        self._sender = asyncio.create_task(self._send_forever())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sender is not None:
            await cancel_and_wait(self._sender)

    async def __call__(self, arg: A) -> R:
        if self._sender is None or self._sender.done():
            raise RuntimeError("Batcher is not running (use it as an async context manager)")
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((arg, answer))
        self._wanted.set()
        # Shielded: a caller that goes away (client disconnect) must not cancel the batch the
        # others wait for.
        return await asyncio.shield(answer)

    def _stopping(self) -> bool:
        return self._sender is not None and self._sender.cancelling() > 0

    async def _send_forever(self) -> None:
        batch: list[tuple[A, asyncio.Future[R]]] = []
        try:
            while True:
                await self._wanted.wait()
                self._wanted.clear()
                # Taken before the batch is sent: who arrives from here on waits for the next.
                batch, self._waiting = self._waiting, []
                if not batch:
                    continue
                try:
                    results = await self._run([arg for arg, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"{len(results)} results for {len(batch)} calls")
                except asyncio.CancelledError:
                    if self._stopping():
                        raise
                    # Cancelled inside `run` (not by us): fail this batch, keep serving.
                    _fail(batch, RuntimeError("the batch was cancelled"))
                except Exception as exc:
                    _fail(batch, exc)
                else:
                    for (_, answer), result in zip(batch, results, strict=False):
                        answer.set_result(result)
                batch = []
        finally:
            for _, answer in (*batch, *self._waiting):
                if not answer.done():
                    answer.cancel()
            self._waiting = []


def _fail(batch: list[tuple[A, asyncio.Future[R]]], exc: BaseException) -> None:
    for _, answer in batch:
        answer.set_exception(exc)
        answer.exception()  # marked as seen: every caller of the batch may have gone away
