"""Billing meter rules: values, timestamps, windows and aggregation formulas."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meter.stripe_emulator import meter_math
from meter.stripe_emulator.meter_math import MeterRuleError, Point

NOW = 1_800_000_000


def test_value_limits() -> None:
    assert meter_math.parse_value("12.5") == Decimal("12.5")
    assert meter_math.parse_value("123456789012345") == Decimal(123456789012345)
    assert meter_math.parse_value("1000000000000000000") == Decimal(10) ** 18  # 1 digit
    with pytest.raises(MeterRuleError) as exc:
        meter_math.parse_value("1234567890123456")
    assert exc.value.code == "invalid_value"
    for bad in ("abc", "NaN", "inf"):
        with pytest.raises(MeterRuleError):
            meter_math.parse_value(bad)


def test_timestamp_window() -> None:
    meter_math.check_timestamp(NOW - 35 * 86400, NOW)
    meter_math.check_timestamp(NOW + 300, NOW)
    with pytest.raises(MeterRuleError) as past:
        meter_math.check_timestamp(NOW - 35 * 86400 - 1, NOW)
    assert past.value.code == "timestamp_too_far_in_past"
    with pytest.raises(MeterRuleError) as future:
        meter_math.check_timestamp(NOW + 301, NOW)
    assert future.value.code == "timestamp_in_future"


def test_text_limit() -> None:
    meter_math.check_text("x" * 100, "identifier")
    with pytest.raises(MeterRuleError):
        meter_math.check_text("x" * 101, "identifier")


def test_formulas() -> None:
    pts = [Point(10, Decimal(5), 0), Point(30, Decimal(2), 1), Point(20, Decimal(7), 2)]
    assert meter_math.aggregate("sum", pts) == 14
    assert meter_math.aggregate("count", pts) == 3
    assert meter_math.aggregate("last", pts) == 2  # latest timestamp wins, not latest arrival
    # Stripe does not document `last`'s tie-break: the first received wins, never the resend.
    tie = [Point(10, Decimal(1), 0), Point(10, Decimal(9), 1)]
    assert meter_math.aggregate("last", tie) == 1
    assert meter_math.aggregate("last", [*tie, Point(11, Decimal(4), 2)]) == 4
    assert meter_math.aggregate("last", []) == 0


def test_windows_and_alignment() -> None:
    start = 1_800_000_000 - 1_800_000_000 % 86400
    assert meter_math.windows(start, start + 7200, "hour") == [
        (start, start + 3600),
        (start + 3600, start + 7200),
    ]
    assert meter_math.windows(start, start + 60, None) == [(start, start + 60)]
    meter_math.check_range(start, start + 86400, "day")
    with pytest.raises(MeterRuleError):
        meter_math.check_range(start + 60, start + 3600, "hour")
    with pytest.raises(MeterRuleError):
        meter_math.check_range(start + 1, start + 60, None)
    with pytest.raises(MeterRuleError):
        meter_math.check_range(start, start, None)


def test_summarize_groups_by_hour() -> None:
    start = 1_800_000_000 - 1_800_000_000 % 3600
    pts = [Point(start + 5, Decimal(1), 0), Point(start + 3700, Decimal(4), 1)]
    rows = meter_math.summarize("sum", pts, start, start + 7200, "hour")
    assert [r[2] for r in rows] == [1, 4]
    assert meter_math.as_number(Decimal("2.50")) == 2.5
    assert isinstance(meter_math.as_number(Decimal("3.0")), int)


def test_pre_aggregated_windows_keep_the_last_received_event() -> None:
    hour = 3600
    pts = [Point(10, Decimal(5), 0), Point(5, Decimal(3), 1), Point(hour + 1, Decimal(7), 2)]
    assert meter_math.pre_aggregated(pts, None) == pts
    kept = meter_math.pre_aggregated(pts, "hour")
    assert [p.value for p in kept] == [3, 7]
    assert meter_math.aggregate("sum", kept) == 10
    assert [p.value for p in meter_math.pre_aggregated(pts, "day")] == [7]
