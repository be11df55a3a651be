"""meter/alerts/rules.py: thresholds crossed at equality, percentages, numbers as text."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meter.alerts import rules
from meter.errors import InvalidRequest


def d(value: str) -> Decimal:
    return Decimal(value)


def test_crossed_at_equality_and_above() -> None:
    ts = rules.thresholds([80, 50, "100"], rules.PERCENT_OF_LIMIT)
    assert ts == (d("50"), d("80"), d("100"))
    assert rules.crossed(ts, d("79.999")) == [d("50")]
    assert rules.crossed(ts, d("80")) == [d("50"), d("80")]
    assert rules.crossed(ts, d("1000")) == list(ts)
    assert rules.crossed(ts, d("0")) == []


def test_percent_needs_a_positive_limit() -> None:
    assert rules.percent(d("850"), d("1000")) == d("85")
    assert rules.percent(d("1"), d("0")) is None


def test_numbers_are_plain_decimal_text() -> None:
    assert [rules.number(d(v)) for v in ("100", "1E+2", "80.50", "0.001")] == [
        "100",
        "100",
        "80.5",
        "0.001",
    ]


@pytest.mark.parametrize("bad", ["1e19", "-1", "inf", "", "0.0"])
def test_thresholds_out_of_range_are_refused(bad: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        rules.thresholds([bad], rules.UNITS)
    assert info.value.param == "thresholds[0]"


def test_equal_thresholds_written_differently_are_duplicates() -> None:
    with pytest.raises(InvalidRequest) as info:
        rules.thresholds([100, "1E+2"], rules.UNITS)
    assert info.value.param == "thresholds"
