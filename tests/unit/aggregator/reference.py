"""A reference fold, written as plainly as possible and sharing no code with aggregator.fold
except the bucket window arithmetic's contract: what every bucket must hold for a set of events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

import orjson

from aggregator.attribution import UNATTRIBUTED, Attribution
from meter.events import UsageEvent

HOUR = 3_600_000

# (tenant, customer, meter, item, bucket start ms) → (count, sum, max, last value)
Expected = dict[tuple[str, str, str, str | None, int], tuple[int, Decimal, Decimal, Decimal]]
# (tenant, customer, meter, item, period start ms) → distinct count
ExpectedUnique = dict[tuple[str, str, str, str | None, int | None], int]

Attribute = Callable[[UsageEvent], Attribution]


def first_occurrences(events: Iterable[UsageEvent]) -> list[UsageEvent]:
    """What exactly-once means: each (tenant, id) counts once, as first accepted."""
    seen: dict[tuple[str, str], UsageEvent] = {}
    for e in events:
        seen.setdefault((e.tenant, e.id), e)
    return list(seen.values())


def _start(e: UsageEvent, a: Attribution) -> int:
    start = e.timestamp_ms // HOUR * HOUR
    if a.period is not None:
        start = max(start, a.period.start_ms)
    return start


def reference(
    events: Iterable[UsageEvent], attribute: Attribute = lambda e: UNATTRIBUTED
) -> Expected:
    groups: dict[tuple[str, str, str, str | None, int], list[UsageEvent]] = {}
    for e in first_occurrences(events):
        a = attribute(e)
        groups.setdefault((e.tenant, e.customer, e.meter, a.item, _start(e, a)), []).append(e)
    out: Expected = {}
    for key, group in groups.items():
        values = [Decimal(e.value) for e in group]
        latest = max(group, key=lambda e: (e.timestamp_ms, e.id))
        out[key] = (len(group), sum(values, Decimal(0)), max(values), Decimal(latest.value))
    return out


def reference_unique(
    events: Iterable[UsageEvent],
    unique_props: Mapping[tuple[str, str], str],
    attribute: Attribute = lambda e: UNATTRIBUTED,
) -> ExpectedUnique:
    sets: dict[tuple[str, str, str, str | None, int | None], set[bytes]] = {}
    for e in first_occurrences(events):
        prop = unique_props.get((e.tenant, e.meter))
        if prop is None or not e.properties or e.properties.get(prop) is None:
            continue
        a = attribute(e)
        period = a.period.start_ms if a.period else None
        key = (e.tenant, e.customer, e.meter, a.item, period)
        sets.setdefault(key, set()).add(orjson.dumps(e.properties[prop]))
    return {k: len(v) for k, v in sets.items()}
