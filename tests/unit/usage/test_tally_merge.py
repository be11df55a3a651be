"""Tally.merge folds two tallies as if their buckets and events had been added to one."""

from __future__ import annotations

from meter.events import UsageEvent
from meter.usage.tally import Tally


def _event(eid: str, value: str, ts_ms: int) -> UsageEvent:
    return UsageEvent("t", eid, "c", "m", value, ts_ms, ts_ms)


def test_merge_equals_folding_every_event_into_one() -> None:
    events = [_event("a", "5", 10), _event("b", "7", 30), _event("c", "2", 20)]
    one, left, right = Tally(), Tally(), Tally()
    for e in events:
        one.add_event(e)
    left.add_event(events[0])
    left.add_event(events[1])
    right.add_event(events[2])
    merged = Tally()
    merged.merge(left)
    merged.merge(right)
    assert merged == one
    for aggregation in ("sum", "count", "max", "last"):
        assert merged.quantity(aggregation) == one.quantity(aggregation)


def test_merging_an_empty_tally_changes_nothing() -> None:
    tally = Tally()
    tally.add_event(_event("a", "3", 5))
    before = Tally()
    before.merge(tally)
    before.merge(Tally())
    assert before == tally
