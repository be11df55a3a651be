"""A token bucket: at most `rate` events per second on average, bursts up to `burst`.

The arithmetic (`TokenBucket.take`) is pure, with the clock passed in; `Limiter` sleeps on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class TokenBucket:
    """Tokens refill at `rate`/s up to `burst`. A take larger than the balance goes into debt,
    and the caller waits until the debt is repaid: the long-run rate never exceeds `rate`."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        return cls(rate, burst, burst, now)

    def take(self, n: float, now: float) -> float:
        """Take `n` tokens at `now`; return how long to wait before using them."""
        elapsed = max(0.0, now - self.stamp)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.stamp = max(self.stamp, now)
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Limiter:
    """Shared by every sender lane of a process; `acquire(n)` returns once `n` may be sent."""

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._bucket = TokenBucket.full(rate, burst, clock())
        self._lock = asyncio.Lock()

    async def acquire(self, n: int) -> float:
        """Wait until `n` events fit under the rate; returns the time waited (seconds)."""
        async with self._lock:
            wait = self._bucket.take(n, self._clock())
            if wait > 0:
                # Holding the lock while waiting keeps waiters in order (first come, first sent).
                await asyncio.sleep(wait)
        return wait
