"""Retry timing: exponential backoff with full jitter, at least what Stripe asked for. Pure."""

from __future__ import annotations

import random
from collections.abc import Mapping


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds form), if any and sane."""
    if not headers:
        return None
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                seconds = float(value)
            except ValueError:
                return None
            return seconds if 0 <= seconds <= 3600 else None
    return None


def should_retry_header(headers: Mapping[str, str] | None) -> bool | None:
    """Stripe's `Stripe-Should-Retry` verdict: True, False, or None when absent."""
    for name, value in (headers or {}).items():
        if name.lower() == "stripe-should-retry":
            return value.strip().lower() == "true"
    return None


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    rng: random.Random,
    retry_after: float | None = None,
) -> float:
    """Delay before retry number `attempt` (0-based): uniform in [0, min(cap, base·2^attempt)],
    never less than Stripe's Retry-After (which may exceed the cap: Stripe knows best)."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 62))
    delay = rng.uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
