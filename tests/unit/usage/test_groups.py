"""Splitting an item's amount among its dimension groups: whole cents that add up exactly."""

from __future__ import annotations

from decimal import Decimal

from meter.usage.groups import split_amount


def test_shares_add_up_to_the_amount() -> None:
    parts = [Decimal(100), Decimal(50), Decimal(7)]
    shares = split_amount(529, parts, Decimal(157))
    assert sum(shares) == 529
    # 336.94…, 168.47…, 23.58…: floors 336, 168, 23; the two cents left go to the largest
    # remainders (.94 and .58).
    assert shares == [337, 168, 24]


def test_equal_remainders_go_to_the_first() -> None:
    assert split_amount(100, [Decimal(1)] * 3, Decimal(3)) == [34, 33, 33]


def test_parts_of_less_than_the_whole_get_their_floor_only() -> None:
    assert split_amount(100, [Decimal(1)], Decimal(3)) == [33]
    assert split_amount(100, [Decimal(1)], Decimal(0)) == [0]
