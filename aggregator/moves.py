"""What re-attribution does with each unattributed bucket of a customer. Pure, unit-tested.

An unattributed bucket is rebuilt from the raw log when every event folded into it is there
(its event count equals its raw events); the raw events are then attributed one by one, split at
period boundaries. A bucket holding events the raw log lacks (folded with METER_RAW_LOG=0, or its
raw partition dropped) can only move whole: its state — count, sum, max, last — merges into
another bucket exactly, but cannot be split. It moves whole when one item period covers its whole
hour; otherwise it stays unattributed ("stuck"), never deleted.

A unique_count meter's distinct values form one unattributed set per customer and meter, each
value credited to the bucket that first brought it; a later bucket that saw the value again does
not record it. So that set moves only as a whole: if any of the meter's buckets lacks raw
events, all of them move whole into one item period, or none moves.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from aggregator.attribution import (
    UNATTRIBUTED,
    Attribution,
    PeriodIndex,
    attribute,
    whole_attribution,
)
from aggregator.windows import HOUR_MS, Window, hour_of

BucketAt = tuple[str, int]
"""(meter, bucket start ms): an unattributed bucket of one customer (its window is the hour)."""


@dataclass(frozen=True, slots=True)
class Unattributed:
    """An unattributed bucket as stored: its meter, hour and how many events it folded."""

    meter: str
    window: Window
    events: int

    @property
    def at(self) -> BucketAt:
        return (self.meter, self.window.start_ms)


@dataclass(slots=True)
class Moves:
    """Re-attribution's decision for a customer's unattributed buckets."""

    # Every event is in the raw log: rebuilt from it.
    rebuild: set[BucketAt] = field(default_factory=set)
    # Moved whole (state, distinct values and raw events) under this attribution.
    whole: dict[BucketAt, Attribution] = field(default_factory=dict)
    # Neither: left as they are.
    stuck: set[BucketAt] = field(default_factory=set)


def plan_moves(
    customer: str,
    buckets: Iterable[Unattributed],
    raw_events: Mapping[BucketAt, int],
    unique_meters: Collection[str],
    index: PeriodIndex,
) -> Moves:
    """Decide per bucket (per meter for unique_count meters); `raw_events` counts the customer's
    unattributed raw events per bucket, `unique_meters` names its unique_count meters."""
    moves = Moves()
    by_meter: dict[str, list[Unattributed]] = {}
    for b in buckets:
        by_meter.setdefault(b.meter, []).append(b)
    for meter, group in sorted(by_meter.items()):
        complete = [raw_events.get(b.at, 0) == b.events for b in group]
        if meter in unique_meters:
            if all(complete):
                moves.rebuild.update(b.at for b in group)
                continue
            targets = {whole_attribution(customer, meter, b.window, index) for b in group}
            target = targets.pop() if len(targets) == 1 else UNATTRIBUTED
            if target == UNATTRIBUTED:
                moves.stuck.update(b.at for b in group)
            else:
                moves.whole.update((b.at, target) for b in group)
            continue
        for b, whole_in_raw in zip(group, complete, strict=True):
            if whole_in_raw:
                moves.rebuild.add(b.at)
                continue
            target = whole_attribution(customer, meter, b.window, index)
            if target == UNATTRIBUTED:
                moves.stuck.add(b.at)
            else:
                moves.whole[b.at] = target
    return moves


def force_whole(
    moves: Moves,
    customer: str,
    meter: str,
    at_ms: int,
    index: PeriodIndex,
    unique_meters: Collection[str],
) -> Moves:
    """An operator's way out for stuck usage: the stuck bucket of `meter` holding the instant
    `at_ms` moves whole under the attribution of that instant (UNATTRIBUTED there: nothing
    moves). For a unique_count meter every other stuck bucket moves too, each whole into the
    period covering its hour (where one does): a distinct value then counts in the period of the
    bucket that first brought it, never twice. The rest of `moves` is unchanged."""
    target = attribute(customer, meter, at_ms, index)
    if target == UNATTRIBUTED:
        return moves
    held = (meter, hour_of(at_ms).start_ms)
    chosen: dict[BucketAt, Attribution] = {held: target} if held in moves.stuck else {}
    if meter in unique_meters:
        for at in sorted(moves.stuck - {held}):
            if at[0] != meter:
                continue
            found = whole_attribution(customer, meter, Window(at[1], at[1] + HOUR_MS), index)
            if found != UNATTRIBUTED:
                chosen[at] = found
    return Moves(
        rebuild=set(moves.rebuild),
        whole={**moves.whole, **chosen},
        stuck=moves.stuck - chosen.keys(),
    )
