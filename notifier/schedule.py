"""When a failed delivery is tried again, and when it stops. Pure."""

from __future__ import annotations

import datetime as dt
import random


def retry_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before the try after attempt number `attempt` (1-based) failed: uniform in
    [0, min(cap, base·2^(attempt-1))] (full jitter: retries of many deliveries spread out)."""
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return rng.uniform(0.0, ceiling)


def next_attempt(
    now: dt.datetime,
    retry_from: dt.datetime,
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_for: float,
    rng: random.Random,
) -> dt.datetime | None:
    """When to try again after a failure, or None: the retry window (`retry_for` seconds from
    `retry_from`) is over, so the delivery has failed. A retry falling past the window's end is
    moved to that end, so the last try happens within the window."""
    end = retry_from + dt.timedelta(seconds=retry_for)
    if now >= end:
        return None
    delay = retry_delay(attempt, base=base, cap=cap, rng=rng)
    return min(now + dt.timedelta(seconds=delay), end)
