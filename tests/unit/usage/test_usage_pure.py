"""The usage API's pure parts: folding, parameters, cursors, pending-entry filtering, periods."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meter.core.streams import stream_id_key
from meter.errors import InvalidRequest
from meter.events import UsageEvent, event_key
from meter.pricing import Period, price_from_stripe
from meter.usage import params, report
from meter.usage.pending import PendingEntry, PendingRead, after_checkpoints, keys_to_check
from meter.usage.store import PlanItem
from meter.usage.tally import Tally


def ev(id_: str, value: str, ms: int, meter: str = "calls") -> UsageEvent:
    return UsageEvent("acme", id_, "c", meter, value, ms, ms)


def rollup(**kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "event_count": 2,
        "value_sum": Decimal(10),
        "value_max": Decimal(7),
        "unique_count": 3,
        "buckets": 1,
        "last_value": Decimal(3),
        "last_at": dt.datetime.fromtimestamp(100, dt.UTC),
        "last_event_id": "b",
    }
    return row | kw


def test_tally_folds_rollups_and_events_per_aggregation() -> None:
    t = Tally()
    t.add_rollups(rollup())
    t.add_event(ev("x", "9", 50_000))  # older than the rollup's last: not the last value
    t.add_event(ev("y", "1.5", 200_000))
    assert t.quantity("sum") == Decimal("20.5")
    assert t.quantity("count") == 4
    assert t.quantity("max") == 9
    assert t.quantity("last") == Decimal("1.5")
    assert t.quantity("unique_count") == 3  # pending values are never counted as unique
    assert (t.pending, Tally().quantity("max"), Tally().quantity("last")) == (2, 0, 0)


def test_stream_ids_order_numerically() -> None:
    assert stream_id_key("10-0") > stream_id_key("9-5")
    assert stream_id_key("9-10") > stream_id_key("9-9")


def test_only_entries_after_the_checkpoint_are_pending() -> None:
    entries = [
        PendingEntry("s0", "5-0", ev("a", "1", 1)),
        PendingEntry("s0", "6-0", ev("b", "1", 1)),
    ]
    entries.append(PendingEntry("s1", "1-0", ev("c", "1", 1)))
    read = PendingRead(entries, 3, False)
    assert [e.id for e in after_checkpoints(read, {"s0": "5-0"})] == ["b", "c"]


def test_a_flagged_entry_counts_only_as_the_aggregator_will_fold_it() -> None:
    """Flagged: may repeat an event whose dedupe key expired. Dropped when its key was folded
    (in the snapshot) or an earlier pending entry has its id; unflagged entries are not looked
    up at all."""
    entries = [
        PendingEntry("s0", "1-0", ev("folded", "1", 1), may_repeat=True),
        PendingEntry("s0", "2-0", ev("twice", "1", 1)),
        PendingEntry("s0", "3-0", ev("twice", "1", 1), may_repeat=True),
        PendingEntry("s0", "4-0", ev("new", "1", 1), may_repeat=True),
        PendingEntry("s0", "5-0", ev("plain", "1", 1)),
    ]
    read = PendingRead(entries, 5, False)
    asked = keys_to_check(read)
    assert sorted(asked) == sorted(event_key("acme", i) for i in ("folded", "twice", "new"))
    folded = {event_key("acme", "folded"), event_key("acme", "plain")}
    assert [e.id for e in after_checkpoints(read, {}, folded)] == ["twice", "new", "plain"]
    # The first "twice" folded meanwhile: the snapshot now holds its key too.
    folded.add(event_key("acme", "twice"))
    assert [e.id for e in after_checkpoints(read, {"s0": "2-0"}, folded)] == ["new", "plain"]


def test_period_param() -> None:
    assert params.period({}) == "current"
    assert params.period({"period": "previous"}) == "previous"
    assert params.period({"period": "2026-01-01"}) == 1_767_225_600
    assert params.period({"period": "2026-01-01T01:00:00+01:00"}) == 1_767_225_600
    with pytest.raises(InvalidRequest) as err:
        params.period({"period": "last-week"})
    assert err.value.param == "period"


def test_history_params_round_to_buckets_and_cursor_round_trips() -> None:
    q = params.history({"from": "3601", "to": "7000", "granularity": "hour"}, now=10**9)
    assert (q.start, q.end, q.step, q.limit, q.after) == (3600, 7200, 3600, 100, None)
    cursor = params.encode_cursor("a b:c=é", 86400)
    assert params.decode_cursor(cursor) == ("a b:c=é", 86400)
    # Meter names never hold NUL (ingest refuses it; Postgres text cannot hold it).
    with pytest.raises(InvalidRequest):
        params.decode_cursor(params.encode_cursor("a\x00b", 86400))
    with pytest.raises(InvalidRequest):
        params.history({"limit": "1001"}, now=10**9)


def _item(meter: str, aggregation: str = "sum", usage_type: str = "metered") -> PlanItem:
    price = price_from_stripe(
        {
            "id": "p",
            "currency": "usd",
            "unit_amount_decimal": "2",
            "recurring": {"interval": "month", "usage_type": usage_type},
        }
    )
    return PlanItem(
        f"si_{meter}", "p", price, None, None, meter, aggregation, Period(0, 100), False
    )


def test_pending_events_go_to_the_item_of_their_meter_and_period() -> None:
    calls, gb = _item("calls"), _item("gb")
    selection = [(calls, Period(0, 100)), (gb, Period(0, 100))]
    tallies: dict[tuple[str, str], Tally] = {}
    events = [
        ev("a", "2", 5_000),
        ev("b", "3", 5_000, "gb"),
        ev("c", "4", 100_000),
        ev("d", "1", 1, "x"),
    ]
    assert report.fold_pending(selection, tallies, events) == 2
    assert {k: t.quantity("sum") for k, t in tallies.items()} == {
        ("si_calls", "calls"): 2,
        ("si_gb", "gb"): 3,
    }


def test_max_meters_hold_their_value_and_closed_periods_project_as_is() -> None:
    doc, projected = report.item_doc(_item("gb", "max"), Period(0, 100), None, now=50)
    assert (doc["projection"]["method"], projected) == (report.HOLD_MAX, 0)
    hour = 3600
    tally = Tally()
    tally.add_event(ev("a", "10", 1), recent_since_ms=0)
    # A quarter of an 80-hour period gone, all of it in the trailing window (shorter than a
    # day): 10 units in 20 hours, 30 more in the 60 left → 40 units.
    doc, projected = report.item_doc(_item("calls"), Period(0, 80 * hour), tally, now=20 * hour)
    assert (doc["amount"], doc["projection"]["amount"], projected) == (20, 80, 40)
    assert doc["projection"]["window"] == {"start": 0, "end": 20 * hour}
    # Before the first hour: no extrapolation.
    doc, projected = report.item_doc(_item("calls"), Period(0, 80 * hour), tally, now=25)
    assert (doc["projection"]["method"], projected) == ("insufficient_history", 10)
    doc, projected = report.item_doc(_item("calls"), Period(0, 100), tally, now=500)
    assert doc["projection"]["amount"] == doc["amount"] == 20
    assert doc["projection"]["method"] == "period_ended"


def test_next_period_keeps_the_month_anchor() -> None:
    jan31 = 1_769_817_600  # 2026-01-31
    feb28 = 1_772_236_800  # 2026-02-28
    mar31 = 1_774_915_200  # 2026-03-31
    assert report.next_period(Period(jan31, feb28), _item("calls")) == Period(feb28, mar31)


def test_num_is_plain_decimal_text() -> None:
    assert [report.num(Decimal(x)) for x in ("1E+3", "0.250", "12")] == ["1000", "0.25", "12"]


def test_num_rounds_every_quantity_to_twelve_places() -> None:
    # Stripe's precision for decimal quantities: "up to 12 decimal places" (quantity_decimal).
    assert report.QUANTITY_PLACES == 12
    third = Decimal(163983) / Decimal(3)  # 54661, and a non-terminating fraction
    assert report.num(third) == "54661"
    run_rate = Decimal("54661.22448979591836734693878")
    assert report.num(run_rate) == "54661.224489795918"
    assert report.num(Decimal("0.0000000000015")) == "0.000000000002"  # half-even, 12 places
    assert report.num(Decimal("0.0000000000025")) == "0.000000000002"
    assert report.num(Decimal("1E-20")) == "0"
    assert report.num(Decimal("-1E-20")) == "0"  # never "-0"
    assert report.num(Decimal("-3.50")) == "-3.5"


def test_num_keeps_every_integer_digit_of_a_huge_projection() -> None:
    # Past the default 28 significant digits: the integer part is never cut.
    huge = Decimal("1" + "0" * 30 + ".1234567890123456")
    assert report.num(huge) == "1" + "0" * 30 + ".123456789012"
    assert "E" not in report.num(Decimal("4.3E+19"))


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**20), max_value=10**20))
def test_num_is_within_half_a_unit_of_the_twelfth_place(value: Decimal) -> None:
    text = report.num(value)
    assert re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]{0,11}[1-9])?", text), text
    assert abs(Decimal(text) - value) <= Decimal("0.5E-12")
