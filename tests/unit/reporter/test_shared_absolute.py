"""An absolute meter's unit is the customer's period, whichever item the reporter names; windows
on one Stripe meter that overlap with other bounds are found, equal or disjoint ones are not."""

from __future__ import annotations

import dataclasses
import datetime as dt

from reporter.periods import BillingPeriod, overlapping

from .test_rules import T0, unit

DAY = dt.timedelta(days=1)


def _window(start: int, end: int, meter: str = "calls") -> BillingPeriod:
    return BillingPeriod(T0 + start * DAY, T0 + end * DAY, False, meter=meter)


def test_an_absolute_unit_is_keyed_by_customer_not_item() -> None:
    a = unit(1, 5, absolute=True)
    b = dataclasses.replace(a, item="si_2")
    assert (a.mark_item, a.key) == ("", b.key)
    # Delta buckets stay per item.
    d = unit(1, 5)
    assert d.mark_item == "si_1"
    assert d.key != dataclasses.replace(d, item="si_2").key


def test_overlapping_windows_with_other_bounds() -> None:
    own = _window(0, 30)
    assert overlapping(own, [_window(0, 30), _window(30, 60), _window(-30, 0)], "calls") == []
    later = _window(10, 40)
    added = _window(15, 30)  # an item added mid-period: same end
    other_meter = _window(10, 40, "other")
    assert overlapping(own, [later, added, other_meter], "calls") == [later, added]
