"""A token bucket per API key: pure, O(1) per request, no locks (one event loop per process).

Each key has a bucket holding up to `burst` tokens, refilled at `rate` tokens a second; a
request takes one. The limit is per process: `meter serve --workers N` (or N machines) admits
up to N × rate requests a second per key.
"""

from __future__ import annotations

from collections.abc import Hashable


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """`acquire(key, now)` → 0.0 when the request may go ahead, else seconds to wait."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0 (a disabled limit is no limiter at all)")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: dict[Hashable, _Bucket] = {}

    def acquire(self, key: Hashable, now: float) -> float:
        """Take one token from `key`'s bucket at monotonic time `now` (seconds).

        Returns 0.0 when a token was taken, otherwise how long until one is available (nothing
        is taken then, so a refused request costs the client nothing).
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        # A clock that went backwards (it does not, it is monotonic) would only refill nothing.
        tokens = min(self._burst, bucket.tokens + max(0.0, now - bucket.stamp) * self._rate)
        bucket.stamp = now
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            return 0.0
        bucket.tokens = tokens
        return (1.0 - tokens) / self._rate

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: forgetting them changes no answer."""
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.stamp) * self._rate >= self._burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self._max_keys:  # all busy: bounded memory beats fairness
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)
