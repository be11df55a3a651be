"""When to retry a batch and how long to wait: pure, no I/O, so the schedule is unit-tested.

Retrying is always safe because a batch is resent byte for byte, with the same event ids: the
server answers `duplicate` for whatever an earlier attempt already committed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# 429 and 5xx: the server (or a proxy in front of it) may accept the same bytes later.
# 400, 401, 413 and the other 4xx would be answered the same way again.
_RETRYABLE_4XX = frozenset({408, 429})


def is_retryable_status(status: int) -> bool:
    """True for statuses a resend of the same batch can fix."""
    return status in _RETRYABLE_4XX or status >= 500


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date); None if absent
    or unreadable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, floored by the server's Retry-After, capped at max_delay.

    `max_attempts` counts the first try; after the last one the batch is given up and reported
    (see MeterClient's `on_error`). Retry-After is honoured up to `max_delay`, so a server asking
    for an hour cannot park the client's buffer for an hour.
    """

    max_attempts: int = 10
    base_delay: float = 0.1
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.base_delay <= self.max_delay:
            raise ValueError("need 0 < base_delay <= max_delay")

    def backoff(self, attempt: int, rand: float) -> float:
        """Delay after failed attempt number `attempt` (0-based), `rand` uniform in [0, 1).

        "Equal jitter": half the exponential step is fixed, half random, so the delay grows
        with every attempt while clients that failed together spread out.
        """
        step = min(self.max_delay, self.base_delay * 2.0 ** min(attempt, 62))
        return step / 2 + step / 2 * rand

    def delay(self, attempt: int, retry_after: float | None, rand: float) -> float:
        """The wait before the next attempt: backoff, at least Retry-After, at most max_delay."""
        wait = self.backoff(attempt, rand)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.max_delay)
