"""Folding events into rollup buckets: bucket keys, per-bucket state, merging. Pure, unit-tested.

A bucket's state holds every aggregation at once (count, sum, max, last, unique_count), so the
fold never depends on the meter definition except for which property unique_count counts.
`Rollup.merge` is associative and commutative for count/sum/max/last, which is what makes the
result independent of how the stream is cut into batches.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

import orjson

from aggregator.attribution import Attribution
from aggregator.windows import bucket_window
from meter.events import UsageEvent


class BucketKey(NamedTuple):
    """(tenant, customer, meter, subscription item, hour ∩ billing period, combination of
    dimension values: '' for none, docs/dimensions.md).

    A NamedTuple, not a frozen dataclass: the fold looks a key up once per event, and a tuple
    hashes and compares in C (the dataclass's Python `__hash__` was 2 % of the aggregator)."""

    tenant: str
    customer: str
    meter: str
    item: str | None
    period_start_ms: int | None
    start_ms: int
    end_ms: int
    dims: str = ""

    def sort_key(self) -> tuple[str, str, str, bool, str, int, str]:
        """The one total order every writer upserts buckets in, so that two never deadlock."""
        return (
            self.tenant,
            self.customer,
            self.meter,
            self.item is not None,
            self.item or "",
            self.start_ms,
            self.dims,
        )

    def with_dims(self, dims: str) -> BucketKey:
        return self._replace(dims=dims)


def bucket_of(event: UsageEvent, attribution: Attribution) -> BucketKey:
    """The bucket an event is folded into under `attribution`."""
    window = bucket_window(event.timestamp_ms, attribution.period)
    return BucketKey(
        tenant=event.tenant,
        customer=event.customer,
        meter=event.meter,
        item=attribution.item,
        period_start_ms=attribution.period.start_ms if attribution.period else None,
        start_ms=window.start_ms,
        end_ms=window.end_ms,
    )


@dataclass(frozen=True, slots=True)
class Rollup:
    """The aggregated state of one bucket."""

    count: int
    total: Decimal
    maximum: Decimal
    last_value: Decimal
    last_ts_ms: int
    last_id: str
    unique: int = 0

    @classmethod
    def of(cls, event: UsageEvent) -> Rollup:
        value = event.decimal_value
        return cls(1, value, value, value, event.timestamp_ms, event.id)

    def merge(self, other: Rollup) -> Rollup:
        """Both states together. `last` is the latest by (event timestamp, event id)."""
        later = (other.last_ts_ms, other.last_id) > (self.last_ts_ms, self.last_id)
        last = other if later else self
        return Rollup(
            count=self.count + other.count,
            total=self.total + other.total,
            maximum=max(self.maximum, other.maximum),
            last_value=last.last_value,
            last_ts_ms=last.last_ts_ms,
            last_id=last.last_id,
            unique=self.unique + other.unique,
        )

    def with_unique(self, extra: int) -> Rollup:
        return Rollup(
            self.count,
            self.total,
            self.maximum,
            self.last_value,
            self.last_ts_ms,
            self.last_id,
            self.unique + extra,
        )


def fold(pairs: Iterable[tuple[BucketKey, UsageEvent]]) -> dict[BucketKey, Rollup]:
    """Fold events (each with its bucket) into one state per bucket."""
    # Optimisation: group first, then fold each bucket's events in one pass of plain arithmetic,
    # instead of building and merging a Rollup per event (two dataclass constructions per event
    # was most of the fold's cost). The result is exactly `Rollup.of(e1).merge(Rollup.of(e2))…`:
    # the sum is the same left fold (reduce, not sum(), which would start at 0 and round a lone
    # over-precise value), and max and `last` keep the first of equals, as merge does.
    groups: dict[BucketKey, list[UsageEvent]] = {}
    for key, event in pairs:
        group = groups.get(key)
        if group is None:
            groups[key] = [event]
        else:
            group.append(event)
    out: dict[BucketKey, Rollup] = {}
    for key, events in groups.items():
        values = [Decimal(e.value) for e in events]
        last = 0
        last_ts, last_id = events[0].timestamp_ms, events[0].id
        for i in range(1, len(events)):
            e = events[i]
            if (e.timestamp_ms, e.id) > (last_ts, last_id):
                last, last_ts, last_id = i, e.timestamp_ms, e.id
        out[key] = Rollup(
            count=len(events),
            total=functools.reduce(operator.add, values),
            maximum=max(values),
            last_value=values[last],
            last_ts_ms=last_ts,
            last_id=last_id,
        )
    return out


def merge_all(into: dict[BucketKey, Rollup], more: Mapping[BucketKey, Rollup]) -> None:
    """Merge `more` into `into` in place (what the bucket upsert does in SQL)."""
    for key, state in more.items():
        prev = into.get(key)
        into[key] = state if prev is None else prev.merge(state)


def sorted_buckets(rollups: Mapping[BucketKey, Rollup]) -> list[tuple[BucketKey, Rollup]]:
    """Buckets in the order they must be upserted in."""
    return sorted(rollups.items(), key=lambda kv: kv[0].sort_key())


# --- running totals -----------------------------------------------------------------------------

TotalKey = tuple[str, str, str, str, int]
"""(tenant, customer, meter, subscription item, period start ms): one billing period's total."""


def period_totals(rollups: Mapping[BucketKey, Rollup]) -> list[tuple[TotalKey, Rollup]]:
    """What a fold adds to each attributed (item, period, meter) total — the merge of its
    buckets' deltas — sorted: every writer locks totals in this one order, after its buckets
    (unattributed buckets have no total; re-attribution moves them into item buckets, which
    come through here)."""
    out: dict[TotalKey, Rollup] = {}
    for key, rollup in rollups.items():
        if key.item is None or key.period_start_ms is None:
            continue
        total_key = (key.tenant, key.customer, key.meter, key.item, key.period_start_ms)
        seen = out.get(total_key)
        out[total_key] = rollup if seen is None else seen.merge(rollup)
    return sorted(out.items())


# --- unique_count -------------------------------------------------------------------------------

UniqueSet = tuple[str, str, str, str | None, int | None]
"""(tenant, customer, meter, item, period start): one exact set of distinct values."""


@dataclass(frozen=True, slots=True)
class UniqueCandidate:
    """A property value that may be new to its set; credited to `bucket` if it is."""

    set_key: UniqueSet
    value: str
    bucket: BucketKey

    def sort_key(self) -> tuple[str, str, str, bool, str, int, str]:
        t, c, m, item, period = self.set_key
        return (t, c, m, item is not None, item or "", period or 0, self.value)


def unique_value(event: UsageEvent, prop: str) -> str | None:
    """The canonical text of the counted property (JSON, so 1 and "1" stay distinct)."""
    if not event.properties or prop not in event.properties:
        return None
    value = event.properties[prop]
    if value is None:
        return None
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def unique_candidates(
    pairs: Iterable[tuple[BucketKey, UsageEvent]], unique_props: Mapping[tuple[str, str], str]
) -> list[UniqueCandidate]:
    """First occurrence, in stream order, of each (set, value) among events of unique_count
    meters (`unique_props` maps (tenant, meter) to the counted property); sorted for inserting."""
    seen: dict[tuple[UniqueSet, str], UniqueCandidate] = {}
    for key, event in pairs:
        prop = unique_props.get((event.tenant, event.meter))
        if prop is None:
            continue
        value = unique_value(event, prop)
        if value is None:
            continue
        set_key: UniqueSet = (key.tenant, key.customer, key.meter, key.item, key.period_start_ms)
        seen.setdefault((set_key, value), UniqueCandidate(set_key, value, key))
    return sorted(seen.values(), key=UniqueCandidate.sort_key)


def credit_unique(rollups: dict[BucketKey, Rollup], new_values: Iterable[UniqueCandidate]) -> None:
    """Credit each value new to its set (as the database reported) to its bucket, in place."""
    for candidate in new_values:
        rollups[candidate.bucket] = rollups[candidate.bucket].with_unique(1)


def dedupe_batch(events: Iterable[UsageEvent]) -> tuple[list[UsageEvent], int]:
    """Drop repeated (tenant, id) within one batch, keeping the first; return (kept, dropped).

    The database dedupes across batches; within one INSERT a repeated key would be joined twice.
    """
    kept: dict[tuple[str, str], UsageEvent] = {}
    dropped = 0
    for event in events:
        if (event.tenant, event.id) in kept:
            dropped += 1
        else:
            kept[(event.tenant, event.id)] = event
    return list(kept.values()), dropped
