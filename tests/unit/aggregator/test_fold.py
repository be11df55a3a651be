"""The pure fold against the reference fold: any batching, any re-delivery, any order."""

from __future__ import annotations

import itertools
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from aggregator.attribution import UNATTRIBUTED, Attribution
from aggregator.fold import (
    BucketKey,
    Rollup,
    bucket_of,
    credit_unique,
    dedupe_batch,
    fold,
    merge_all,
    period_totals,
    sorted_buckets,
    unique_candidates,
    unique_value,
)
from aggregator.windows import Window
from meter.events import UsageEvent
from tests.unit.aggregator.reference import reference, reference_unique
from tests.unit.aggregator.strategies import BASE_MS, event_lists

UNIQUE = {("acme", "seats"): "user", ("globex", "seats"): "user"}
# A billing period boundary in the middle of the second hour, for c1 only.
BOUNDARY = BASE_MS + 90 * 60_000


def attribution(e: UsageEvent) -> Attribution:
    if e.customer != "c1":
        return UNATTRIBUTED
    if e.timestamp_ms < BOUNDARY:
        return Attribution("si_old", Window(BASE_MS - 10**9, BOUNDARY))
    return Attribution("si_new", Window(BOUNDARY, BOUNDARY + 10**9))


class MemoryStore:
    """What the flush transaction does to Postgres, in memory: dedupe ids, fold only new ones,
    and add each fold's deltas to the period totals."""

    def __init__(self) -> None:
        self.ids: set[tuple[str, str]] = set()
        self.values: set[tuple[object, str]] = set()
        self.rollups: dict[BucketKey, Rollup] = {}
        self.totals: dict[tuple[str, str, str, str, int], Rollup] = {}

    def apply(self, batch: list[UsageEvent]) -> None:
        kept, _ = dedupe_batch(batch)
        new = [e for e in kept if (e.tenant, e.id) not in self.ids]
        self.ids |= {(e.tenant, e.id) for e in new}
        pairs = [(bucket_of(e, attribution(e)), e) for e in new]
        rollups = fold(pairs)
        fresh = [
            c for c in unique_candidates(pairs, UNIQUE) if (c.set_key, c.value) not in self.values
        ]
        self.values |= {(c.set_key, c.value) for c in fresh}
        credit_unique(rollups, fresh)
        merge_all(self.rollups, rollups)
        for key, delta in period_totals(rollups):
            seen = self.totals.get(key)
            self.totals[key] = delta if seen is None else seen.merge(delta)

    def summary(self) -> dict[tuple[str, str, str, str | None, int], tuple[object, ...]]:
        return {
            (k.tenant, k.customer, k.meter, k.item, k.start_ms): (
                s.count,
                s.total,
                s.maximum,
                s.last_value,
            )
            for k, s in self.rollups.items()
        }

    def unique_totals(self) -> dict[tuple[object, ...], int]:
        totals: dict[tuple[object, ...], int] = {}
        for k, s in self.rollups.items():
            if (k.tenant, k.meter) in UNIQUE and s.unique:
                key = (k.tenant, k.customer, k.meter, k.item, k.period_start_ms)
                totals[key] = totals.get(key, 0) + s.unique
        return totals


def batches(events: list[UsageEvent], cuts: list[int]) -> list[list[UsageEvent]]:
    points = sorted({c % (len(events) + 1) for c in cuts} | {0, len(events)})
    return [events[a:b] for a, b in itertools.pairwise(points)]


@given(event_lists, st.lists(st.integers(0, 100), max_size=6))
def test_any_batching_equals_the_reference(events: list[UsageEvent], cuts: list[int]) -> None:
    store = MemoryStore()
    for batch in batches(events, cuts):
        store.apply(batch)
    assert store.summary() == reference(events, attribution)
    assert store.unique_totals() == reference_unique(events, UNIQUE, attribution)


@given(event_lists, st.lists(st.integers(0, 100), max_size=6), st.data())
def test_redelivering_batches_changes_nothing(
    events: list[UsageEvent], cuts: list[int], data: st.DataObject
) -> None:
    once = MemoryStore()
    twice = MemoryStore()
    for batch in batches(events, cuts):
        once.apply(batch)
        twice.apply(batch)
        # A crash after commit re-reads the batch (or any earlier one) from the stream.
        twice.apply(batch)
    redo = data.draw(st.lists(st.sampled_from(events), max_size=10)) if events else []
    twice.apply(redo)
    assert twice.summary() == once.summary()
    assert twice.unique_totals() == once.unique_totals()


@given(event_lists)
def test_merge_is_order_independent(events: list[UsageEvent]) -> None:
    kept, _ = dedupe_batch(events)
    pairs = [(bucket_of(e, UNATTRIBUTED), e) for e in kept]
    assert fold(pairs) == fold(list(reversed(pairs)))


def ev(event_id: str, ts: int, value: str = "1", **props: object) -> UsageEvent:
    return UsageEvent("acme", event_id, "c1", "calls", value, ts, ts, props or None)


def test_last_is_latest_by_timestamp_then_id_not_arrival() -> None:
    pairs = [
        (bucket_of(e, UNATTRIBUTED), e)
        for e in [ev("b", BASE_MS + 5, "7"), ev("z", BASE_MS + 9, "3"), ev("a", BASE_MS + 9, "4")]
    ]
    (state,) = fold(pairs).values()
    assert (state.last_value, state.last_id) == (Decimal(3), "z")
    assert (state.count, state.total, state.maximum) == (3, Decimal(14), Decimal(7))


def test_duplicates_within_a_batch_keep_the_first() -> None:
    kept, dropped = dedupe_batch([ev("a", 1, "1"), ev("b", 2), ev("a", 3, "9")])
    assert [(e.id, e.value) for e in kept] == [("a", "1"), ("b", "1")]
    assert dropped == 1


def test_unique_values_are_typed_and_first_occurrence_wins() -> None:
    assert unique_value(ev("a", 1, user=1), "user") != unique_value(ev("a", 1, user="1"), "user")
    assert unique_value(ev("a", 1), "user") is None
    assert unique_value(ev("a", 1, user=None), "user") is None
    early, late = ev("a", BASE_MS + 7_200_000, user="u"), ev("b", BASE_MS, user="u")
    pairs = [(bucket_of(e, UNATTRIBUTED), e) for e in (early, late)]
    (candidate,) = unique_candidates(pairs, {("acme", "calls"): "user"})
    assert candidate.bucket.start_ms == BASE_MS + 7_200_000  # the first in stream order


def test_buckets_sort_in_one_total_order_with_null_items() -> None:
    keys = [
        BucketKey("acme", "c1", "calls", item, None if item is None else 0, start, start + 1)
        for item in ("si_b", None, "si_a")
        for start in (5, 1)
    ]
    rollups = {k: Rollup.of(ev("x", 1)) for k in keys}
    order = [(k.item, k.start_ms) for k, _ in sorted_buckets(rollups)]
    assert order == [(None, 1), (None, 5), ("si_a", 1), ("si_a", 5), ("si_b", 1), ("si_b", 5)]


@given(event_lists, st.lists(st.integers(0, 100), max_size=6), st.data())
def test_running_totals_equal_their_buckets_whatever_the_batching(
    events: list[UsageEvent], cuts: list[int], data: st.DataObject
) -> None:
    """Each fold's deltas added to the period totals (as upsert_buckets does) give, for every
    attributed (item, period, meter), the merge of its buckets — with re-deliveries too."""
    store = MemoryStore()
    parts = batches(events, cuts)
    for batch in parts + data.draw(st.lists(st.sampled_from(parts), max_size=3)) if parts else []:
        store.apply(batch)
    expected = dict(period_totals(store.rollups))
    assert store.totals == expected
    assert sorted(store.totals) == [k for k, _ in period_totals(store.rollups)]
    assert all(k[3] in ("si_old", "si_new") for k in store.totals)
