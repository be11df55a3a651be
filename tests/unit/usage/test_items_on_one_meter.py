"""Stripe bills a meter event on every item with a price on its meter, in that item's window;
the aggregator attributes each event to one item only (the one whose period started last). The
usage API's per-item tallies must not depend on which one it picked."""

from __future__ import annotations

import itertools
from decimal import Decimal

from meter.events import UsageEvent
from meter.pricing import Period, price_from_stripe
from meter.usage import report
from meter.usage.api import _every_event_on_each
from meter.usage.store import PlanItem
from meter.usage.tally import Tally


def _item(name: str, current: Period, since: int | None = None) -> PlanItem:
    price = price_from_stripe(
        {
            "id": f"price_{name}",
            "currency": "usd",
            "unit_amount_decimal": "2",
            "recurring": {"interval": "month", "usage_type": "metered"},
        }
    )
    return PlanItem(
        f"si_{name}",
        f"price_{name}",
        price,
        None,
        None,
        "calls",
        "sum",
        current,
        False,
        since=since,
    )


def _event(eid: str, at_s: int) -> UsageEvent:
    return UsageEvent("t", eid, "c", "calls", "1", at_s * 1000, at_s * 1000)


def _tally(events: int) -> Tally:
    tally = Tally()
    for n in range(events):
        tally.add_event(_event(f"e{n}", 1))
    return tally


def _quantities(result: list[dict[tuple[str, str], Tally]]) -> list[dict[str, int]]:
    return [{k[0]: int(t.quantity("sum")) for k, t in sel.items()} for sel in result]


def test_every_item_on_the_meter_gets_every_event_whichever_item_the_aggregator_picked() -> None:
    a, b = _item("a", Period(0, 100)), _item("b", Period(0, 100))
    selection = [(a, a.billing), (b, b.billing)]
    # 7 events, split between the two items in every possible way.
    for on_a in range(8):
        by_item = {("si_a", "calls"): _tally(on_a), ("si_b", "calls"): _tally(7 - on_a)}
        assert _quantities(_every_event_on_each([selection], by_item)) == [{"si_a": 7, "si_b": 7}]


def test_an_item_added_mid_period_gets_only_the_events_of_its_own_window() -> None:
    # b was added at 50: events before 50 are a's only (attributed to a), those after are both
    # items' (attributed to b, whose period started last).
    a, b = _item("a", Period(0, 100)), _item("b", Period(0, 100), since=50)
    assert b.billing == Period(50, 100)
    selection = [(a, a.billing), (b, b.billing)]
    by_item = {("si_a", "calls"): _tally(3), ("si_b", "calls"): _tally(4)}
    assert _quantities(_every_event_on_each([selection], by_item)) == [{"si_a": 7, "si_b": 4}]


def test_subscriptions_on_one_meter_each_get_the_events_of_their_window() -> None:
    first, second = _item("a", Period(0, 100)), _item("b", Period(40, 140))
    selections = [[(first, first.billing)], [(second, second.billing)]]
    by_item = {("si_a", "calls"): _tally(2), ("si_b", "calls"): _tally(5)}
    assert _quantities(_every_event_on_each(selections, by_item)) == [{"si_a": 7}, {"si_b": 5}]


def test_carried_usage_is_kept_by_the_merge() -> None:
    a, b = _item("a", Period(0, 100)), _item("b", Period(0, 100))
    carried = Tally()
    carried.add_carried(Decimal(5))
    by_item = {("si_a", "calls"): carried, ("si_b", "calls"): _tally(1)}
    selection = [(a, a.billing), (b, b.billing)]
    assert _quantities(_every_event_on_each([selection], by_item)) == [{"si_a": 6, "si_b": 6}]


def test_a_pending_event_is_folded_into_every_item_whose_window_holds_it() -> None:
    a, b = _item("a", Period(0, 100)), _item("b", Period(0, 100), since=50)
    for order in itertools.permutations([(a, a.billing), (b, b.billing)]):
        tallies: dict[tuple[str, str], Tally] = {}
        events = [_event("early", 10), _event("late", 60)]
        assert report.fold_pending(list(order), tallies, events) == 2
        assert {k[0]: int(t.quantity("sum")) for k, t in tallies.items()} == {"si_a": 2, "si_b": 1}
