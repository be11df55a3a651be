"""Which item an event is attributed to when several items bill its meter."""

from __future__ import annotations

import itertools

from aggregator.attribution import ItemPeriod, attribute, index_periods
from aggregator.windows import Window


def test_the_period_that_started_last_wins_then_the_one_that_lasts_longer() -> None:
    removed = ItemPeriod("c", "calls", "si_a", Window(0, 60))  # removed at 60
    staying = ItemPeriod("c", "calls", "si_b", Window(0, 100))
    added = ItemPeriod("c", "calls", "si_0", Window(70, 100))  # added at 70
    for order in itertools.permutations([removed, staying, added]):
        index = index_periods(order)
        assert attribute("c", "calls", 30, index).item == "si_b"
        assert attribute("c", "calls", 65, index).item == "si_b"
        assert attribute("c", "calls", 80, index).item == "si_0"
