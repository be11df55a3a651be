"""Time windows: hours, billing periods, bucket windows and raw-log days. Pure, unit-tested.
The shared window type and conversions live in meter/core/windows.py.

All times are unix milliseconds, UTC. A window is half-open: [start_ms, end_ms).
"""

from __future__ import annotations

import datetime as dt
import itertools

from meter.core.windows import Window as Window
from meter.core.windows import day_of as day_of
from meter.core.windows import retention_cutoff as retention_cutoff
from meter.core.windows import to_datetime as to_datetime
from meter.core.windows import to_ms as to_ms

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def hour_of(ts_ms: int) -> Window:
    """The UTC hour containing `ts_ms`."""
    start = ts_ms - ts_ms % HOUR_MS
    return Window(start, start + HOUR_MS)


def bucket_window(ts_ms: int, period: Window | None) -> Window:
    """The bucket window of an event: its hour, cut to the billing period containing it.

    An hour holding a period boundary thus yields two buckets, one on each side, and no bucket
    straddles two invoices. Without a period (not attributed yet) the bucket is the whole hour.
    """
    hour = hour_of(ts_ms)
    if period is None:
        return hour
    if not period.contains(ts_ms):
        raise ValueError(f"event at {ts_ms} lies outside its period {period}")
    return Window(max(hour.start_ms, period.start_ms), min(hour.end_ms, period.end_ms))


def overlap(a: Window, b: Window) -> Window:
    """The part of `a` inside `b` (they must overlap)."""
    return Window(max(a.start_ms, b.start_ms), min(a.end_ms, b.end_ms))


def split_hour(hour: Window, periods: list[Window]) -> list[Window]:
    """The bucket windows an hour is cut into by the given (non-overlapping) periods."""
    cuts = sorted(
        {hour.start_ms, hour.end_ms}
        | {p.start_ms for p in periods if hour.contains(p.start_ms)}
        | {p.end_ms for p in periods if hour.contains(p.end_ms)}
    )
    return [Window(a, b) for a, b in itertools.pairwise(cuts)]


def partition_days(now_ms: int, back_s: float, ahead_days: int) -> list[dt.date]:
    """Days whose raw partitions should exist: back over the late window, and some ahead."""
    first = day_of(now_ms - int(back_s * 1000))
    last = day_of(now_ms + ahead_days * DAY_MS)
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
