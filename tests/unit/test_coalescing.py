"""The Batcher's contract: who shares a batch, what a failure reaches, and that no caller is left
waiting."""

from __future__ import annotations

import asyncio

import pytest

from meter.coalescing import Batcher


class Echo:
    """A batch function that records each batch and can hold one in flight until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold = False
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.fail_next: Exception | None = None

    async def __call__(self, args: list[int]) -> list[int]:
        self.batches.append(list(args))
        self.started.set()
        if self.hold:
            self.hold = False
            await self.release.wait()
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return [a * 10 for a in args]


async def test_calls_waiting_together_share_one_batch_in_arrival_order() -> None:
    echo = Echo()
    async with Batcher(echo) as batcher:
        results = await asyncio.gather(*(batcher(n) for n in range(10)))
    assert results == [n * 10 for n in range(10)]
    assert echo.batches == [list(range(10))]


async def test_a_call_never_joins_a_batch_sent_before_it_arrived() -> None:
    echo = Echo()
    echo.hold = True
    async with asyncio.timeout(10), Batcher(echo) as batcher:
        first = asyncio.create_task(batcher(1))
        await echo.started.wait()  # the first batch is in flight
        later = [asyncio.create_task(batcher(n)) for n in (2, 3)]
        await asyncio.sleep(0)
        echo.release.set()
        assert await first == 10
        assert [await t for t in later] == [20, 30]
    assert echo.batches == [[1], [2, 3]]


async def test_a_failed_batch_fails_only_its_callers() -> None:
    echo = Echo()
    echo.fail_next = ValueError("boom")
    async with asyncio.timeout(10), Batcher(echo) as batcher:
        failed = await asyncio.gather(*(batcher(n) for n in range(3)), return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in failed)
        assert await batcher(4) == 40


async def test_a_wrong_number_of_results_fails_the_batch_not_the_batcher() -> None:
    calls = 0

    async def short(args: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        return args[1:] if calls == 1 else args

    async with asyncio.timeout(10), Batcher(short) as batcher:
        failed = await asyncio.gather(batcher(1), batcher(2), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in failed)
        assert await batcher(3) == 3


async def test_a_caller_going_away_does_not_cancel_the_others_batch() -> None:
    echo = Echo()
    echo.hold = True
    async with asyncio.timeout(10), Batcher(echo) as batcher:
        leaving = asyncio.create_task(batcher(1))
        staying = asyncio.create_task(batcher(2))
        await echo.started.wait()
        leaving.cancel()
        echo.release.set()
        assert await staying == 20
    assert leaving.cancelled()


async def test_leaving_the_block_ends_every_waiting_call() -> None:
    echo = Echo()
    echo.hold = True
    async with Batcher(echo) as batcher:
        in_flight = asyncio.create_task(batcher(1))
        await echo.started.wait()
        queued = asyncio.create_task(batcher(2))
        await asyncio.sleep(0)
    done, _ = await asyncio.wait({in_flight, queued}, timeout=10)
    assert done == {in_flight, queued}
    assert in_flight.cancelled()
    assert queued.cancelled()


async def test_a_call_outside_the_block_is_refused() -> None:
    batcher = Batcher(Echo())
    with pytest.raises(RuntimeError, match="not running"):
        await batcher(1)
    async with batcher:
        assert await batcher(1) == 10
    with pytest.raises(RuntimeError, match="not running"):
        await batcher(1)


async def test_a_cancellation_inside_a_batch_fails_that_batch_and_the_batcher_keeps_serving() -> (
    None
):
    calls = 0

    async def cancelled_once(args: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncio.CancelledError  # e.g. a library cancelling its own operation
        return args

    async with asyncio.timeout(10), Batcher(cancelled_once) as batcher:
        failed = await asyncio.gather(batcher(1), batcher(2), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in failed)
        assert await batcher(3) == 3
