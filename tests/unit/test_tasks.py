"""`cancel_and_wait` ends a task even when its first cancellation is lost."""

from __future__ import annotations

import asyncio

import pytest

from meter.tasks import cancel_and_wait


async def test_a_task_that_lost_its_first_cancellation_is_cancelled_again() -> None:
    lost = asyncio.Event()

    async def loses_one() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            lost.set()  # as Python 3.11's wait_for loses a cancellation that races its result
        await asyncio.sleep(3600)

    task = asyncio.create_task(loses_one())
    await asyncio.sleep(0)
    # A single cancel() and `await task` would wait the hour; the guard turns that into a failure.
    await asyncio.wait_for(cancel_and_wait(task), 10)
    assert lost.is_set()
    assert task.cancelled()


async def test_the_error_a_task_ended_with_is_raised_like_await_task() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    failed = asyncio.create_task(fails())
    idle = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="boom"):
        await cancel_and_wait(idle, failed)
    assert idle.cancelled()


async def test_tasks_already_ended_or_none_return_at_once() -> None:
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await cancel_and_wait(done)
    await cancel_and_wait()
