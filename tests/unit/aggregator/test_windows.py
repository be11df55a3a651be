"""Hours, billing periods, bucket windows and partition days."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.attribution import UNATTRIBUTED, Attribution, ItemPeriod, attribute, index_periods
from aggregator.flush import next_stream_id
from aggregator.leases import fair_share, lock_class
from aggregator.windows import (
    HOUR_MS,
    Window,
    bucket_window,
    day_of,
    hour_of,
    partition_days,
    retention_cutoff,
    split_hour,
    to_datetime,
    to_ms,
)
from meter.crashpoints import Faults

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def test_hour_of() -> None:
    assert hour_of(T0 + 59 * 60_000 + 999) == Window(T0, T0 + HOUR_MS)
    assert hour_of(T0 + HOUR_MS) == Window(T0 + HOUR_MS, T0 + 2 * HOUR_MS)


def test_an_hour_with_a_period_boundary_is_split_in_two() -> None:
    boundary = T0 + 20 * 60_000
    before, after = Window(T0 - 10 * HOUR_MS, boundary), Window(boundary, T0 + 10 * HOUR_MS)
    assert bucket_window(T0 + 5, before) == Window(T0, boundary)
    assert bucket_window(boundary, after) == Window(boundary, T0 + HOUR_MS)
    assert bucket_window(T0 + 5, None) == Window(T0, T0 + HOUR_MS)
    assert split_hour(Window(T0, T0 + HOUR_MS), [before, after]) == [
        Window(T0, boundary),
        Window(boundary, T0 + HOUR_MS),
    ]
    with pytest.raises(ValueError, match="outside"):
        bucket_window(boundary, before)


@given(st.integers(0, 4 * 10**12), st.integers(1, 10 * HOUR_MS), st.integers(1, 10 * HOUR_MS))
def test_bucket_lies_in_hour_and_period(ts: int, back: int, ahead: int) -> None:
    period = Window(ts - back + 1, ts + ahead)
    window = bucket_window(ts, period)
    assert window.contains(ts)
    assert hour_of(ts).start_ms <= window.start_ms < window.end_ms <= hour_of(ts).end_ms
    assert period.start_ms <= window.start_ms
    assert window.end_ms <= period.end_ms


@given(st.integers(0, 4 * 10**12))
def test_millisecond_datetimes_round_trip(ts: int) -> None:
    assert to_ms(to_datetime(ts)) == ts
    assert day_of(ts) == to_datetime(ts).date()


def test_partition_days_cover_the_late_window_and_ahead() -> None:
    days = partition_days(T0 + 5 * HOUR_MS, 48 * 3600.0, 2)
    assert days[0] == dt.date(2025, 12, 30)
    assert days[-1] == dt.date(2026, 1, 3)
    assert len(days) == 5
    assert retention_cutoff(T0 + 5 * HOUR_MS, 90 * 86400.0) == dt.date(2025, 10, 3)


def test_attribution_picks_the_period_containing_the_event() -> None:
    periods = index_periods(
        [
            ItemPeriod("c1", "calls", "si_1", Window(T0, T0 + 10)),
            ItemPeriod("c1", "calls", "si_2", Window(T0 + 5, T0 + 20)),
        ]
    )
    assert attribute("c1", "calls", T0 + 1, periods) == Attribution("si_1", Window(T0, T0 + 10))
    # Overlap (a plan change): the period that started last wins.
    assert attribute("c1", "calls", T0 + 7, periods).item == "si_2"
    assert attribute("c1", "calls", T0 + 20, periods) is UNATTRIBUTED
    assert attribute("c2", "calls", T0 + 1, periods) is UNATTRIBUTED
    with pytest.raises(ValueError, match="both"):
        Attribution("si_1", None)


def test_small_helpers() -> None:
    assert next_stream_id("1700000000000-7") == "1700000000000-8"
    assert Faults.parse(["after_commit:3", "before_commit"]).plan == {
        "after_commit": 3,
        "before_commit": 1,
    }
    assert fair_share(16, 3) == 6
    assert fair_share(4, 0) == 4
    assert lock_class("meter", "shard") != lock_class("meter", "member")
    assert 0 <= lock_class("x", "shard") < 2**31
