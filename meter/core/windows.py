"""Time shared by every part of meter: half-open windows and unix-millisecond conversions. Pure.

All times are unix milliseconds, UTC. A window is half-open: [start_ms, end_ms).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """A half-open time range [start_ms, end_ms)."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.start_ms >= self.end_ms:
            raise ValueError(f"empty window [{self.start_ms}, {self.end_ms})")

    def contains(self, ts_ms: int) -> bool:
        return self.start_ms <= ts_ms < self.end_ms


def day_of(ts_ms: int) -> dt.date:
    """The UTC day of `ts_ms`: the raw-log partition the event goes to."""
    return to_datetime(ts_ms).date()


def retention_cutoff(now_ms: int, retention_s: float) -> dt.date:
    """Raw partitions of days strictly before this one may be dropped."""
    return day_of(now_ms - int(retention_s * 1000))


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)


def to_datetime(ts_ms: int) -> dt.datetime:
    """Unix ms → aware UTC datetime (what asyncpg wants for timestamptz). Exact."""
    return _EPOCH + ts_ms * _MS


def to_ms(value: dt.datetime) -> int:
    """Aware datetime → unix ms (every timestamp meter stores has whole milliseconds)."""
    return (value - _EPOCH) // _MS
