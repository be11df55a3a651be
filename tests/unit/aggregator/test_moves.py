"""Which unattributed buckets re-attribution rebuilds, moves whole or leaves (moves.py)."""

from __future__ import annotations

from aggregator.attribution import (
    UNATTRIBUTED,
    Attribution,
    ItemPeriod,
    index_periods,
    whole_attribution,
)
from aggregator.moves import Unattributed, force_whole, plan_moves
from aggregator.windows import HOUR_MS, Window

H = HOUR_MS
OLD = Window(0, 10 * H + H // 2)  # ends half way through hour 10
NEW = Window(10 * H + H // 2, 40 * H)
INDEX = index_periods(
    [
        ItemPeriod("c", m, f"si_{w}_{m}", p)
        for m in ("calls", "seats")
        for w, p in (("old", OLD), ("new", NEW))
    ]
)


def hour(n: int) -> Window:
    return Window(n * H, (n + 1) * H)


def test_whole_attribution_needs_one_period_over_the_whole_hour() -> None:
    assert whole_attribution("c", "calls", hour(3), INDEX) == Attribution("si_old_calls", OLD)
    assert whole_attribution("c", "calls", hour(11), INDEX) == Attribution("si_new_calls", NEW)
    assert whole_attribution("c", "calls", hour(10), INDEX) is UNATTRIBUTED  # cut by the boundary
    assert whole_attribution("c", "calls", hour(40), INDEX) is UNATTRIBUTED  # after every period
    assert whole_attribution("x", "calls", hour(3), INDEX) is UNATTRIBUTED
    # A plan change inside the hour: the later item wins from its start, so the hour is split.
    late = index_periods(
        [
            ItemPeriod("c", "calls", "a", Window(0, 9 * H)),
            ItemPeriod("c", "calls", "b", Window(3 * H + 60_000, 9 * H)),
        ]
    )
    assert whole_attribution("c", "calls", hour(3), late) is UNATTRIBUTED
    assert whole_attribution("c", "calls", hour(4), late) == Attribution(
        "b", late[("c", "calls")][0].period
    )


def test_complete_buckets_rebuild_others_move_whole_or_stay() -> None:
    buckets = [Unattributed("calls", hour(n), 3) for n in (3, 10, 11, 50)]
    raw = {("calls", 3 * H): 1, ("calls", 11 * H): 3, ("calls", 50 * H): 3}
    moves = plan_moves("c", buckets, raw, (), INDEX)
    assert moves.rebuild == {("calls", 11 * H), ("calls", 50 * H)}
    assert moves.whole == {("calls", 3 * H): Attribution("si_old_calls", OLD)}
    assert moves.stuck == {("calls", 10 * H)}


def test_a_unique_count_meter_moves_all_its_buckets_into_one_period_or_none() -> None:
    one = [Unattributed("seats", hour(n), 2) for n in (2, 5)]
    raw = {("seats", 2 * H): 2}
    moves = plan_moves("c", one, raw, {"seats"}, INDEX)
    assert moves.whole == {b.at: Attribution("si_old_seats", OLD) for b in one}
    assert not moves.rebuild
    assert not moves.stuck
    # Hours in two periods: the distinct values cannot be told apart, so nothing moves.
    two = [*one, Unattributed("seats", hour(12), 1)]
    moves = plan_moves("c", two, raw, {"seats"}, INDEX)
    assert moves.stuck == {b.at for b in two}
    assert not moves.whole
    assert not moves.rebuild
    # Every event in the raw log: rebuilt (and split) from it as before.
    full = {b.at: b.events for b in two}
    assert plan_moves("c", two, full, {"seats"}, INDEX).rebuild == {b.at for b in two}


def test_forcing_a_stuck_bucket_moves_it_whole_under_the_named_instant() -> None:
    buckets = [Unattributed("calls", hour(10), 2), Unattributed("calls", hour(50), 1)]
    stuck = plan_moves("c", buckets, {}, (), INDEX)
    assert stuck.stuck == {("calls", 10 * H), ("calls", 50 * H)}
    moved = force_whole(stuck, "c", "calls", 10 * H + H * 3 // 4, INDEX, ())
    assert moved.whole == {("calls", 10 * H): Attribution("si_new_calls", NEW)}
    assert moved.stuck == {("calls", 50 * H)}
    # An instant no period covers moves nothing.
    assert force_whole(stuck, "c", "calls", 50 * H, INDEX, ()) == stuck
    # unique_count: the named hour goes under the instant, the others whole where covered.
    seats = [Unattributed("seats", hour(n), 1) for n in (2, 10, 12, 60)]
    stuck = plan_moves("c", seats, {}, {"seats"}, INDEX)
    moved = force_whole(stuck, "c", "seats", 10 * H, INDEX, {"seats"})
    assert moved.whole == {
        ("seats", 2 * H): Attribution("si_old_seats", OLD),
        ("seats", 10 * H): Attribution("si_old_seats", OLD),
        ("seats", 12 * H): Attribution("si_new_seats", NEW),
    }
    assert moved.stuck == {("seats", 60 * H)}
