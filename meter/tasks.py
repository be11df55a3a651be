"""Stopping background tasks, on Python 3.11 too, where one cancellation can be lost."""

from __future__ import annotations

import asyncio
from typing import Any

# How long a cancelled task may take to end before it is cancelled again.
_AGAIN_AFTER_S = 0.1


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel `tasks` and return once every one has ended; like `await task`, raise the error
    one ended with, if any (its cancellation aside).

    One `cancel()` is not always enough. In Python 3.11, `asyncio.wait_for` returns the inner
    result when the inner future completes just as the waiting task is cancelled, and the
    cancellation is lost (python/cpython#86296; wait_for was rewritten in 3.12). redis-py wraps
    its socket writes in `wait_for`, so a loop cancelled at that moment goes on running, and
    `await task` after a single `cancel()` waits forever (a shutdown hung so). The cancellation
    is repeated until the task has ended: safe for the tasks stopped this way, whose cleanup
    awaits nothing but a pool release (which asyncpg shields).
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_AGAIN_AFTER_S)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
