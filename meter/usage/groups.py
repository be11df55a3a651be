"""Usage per combination of dimension values: `group_by` and `filter[…]` on the usage route
(docs/dimensions.md). Pure: rows and pending events in, each item's groups out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from meter.dimensions import Versions, combination, values_of
from meter.events import UsageEvent
from meter.usage.params import Breakdown
from meter.usage.report import num
from meter.usage.tally import Tally

GroupKey = tuple[str, ...]
# Aggregations whose groups add up to the item's quantity, so its amount can be split by them.
ADDITIVE = ("sum", "count")


def group_of(
    event: UsageEvent, versions: Mapping[tuple[str, str], Versions], b: Breakdown
) -> GroupKey | None:
    """A pending event's group (None: the filters exclude it), from the keys of the event's
    time as the aggregator will fold it. The cardinality guard is not applied to pending events:
    one the guard will fold into `_other` shows under its own values until it is aggregated."""
    v = versions.get((event.tenant, event.meter))
    keys = v.at(event.timestamp_ms) if v is not None else ()
    dims = combination(event.properties, keys)
    wanted = [*b.group_by, *(k for k, _ in b.filters)]
    values = values_of(dims, wanted)
    if any(values[k] != want for k, want in b.filters):
        return None
    return tuple(values[k] for k in b.group_by)


def tallies(
    rows: Iterable[Any],
    pending: Iterable[UsageEvent],
    versions: Mapping[tuple[str, str], Versions],
    b: Breakdown,
) -> dict[GroupKey, Tally]:
    """Each group's tally: rows of queries.GROUPS_IN_WINDOW plus the pending events given (those
    of the item's meter and period)."""
    out: dict[GroupKey, Tally] = {}
    n = len(b.group_by)
    for r in rows:
        key = tuple(r[f"g{i + 1}"] for i in range(n))
        out.setdefault(key, Tally()).add_rollups(r)
    for e in pending:
        key2 = group_of(e, versions, b)
        if key2 is not None:
            out.setdefault(key2, Tally()).add_event(e)
    return out


def split_amount(amount: int, parts: Sequence[Decimal], whole: Decimal) -> list[int]:
    """`amount` shared in proportion to `parts` of `whole`, in whole minor units: each part's
    floor, then the cents left over one each to the largest remainders (first of equals). The
    shares of parts that make up the whole add up to `amount` exactly."""
    if whole == 0:
        return [0 for _ in parts]
    exact = [Decimal(amount) * p / whole for p in parts]
    floors = [int(x.to_integral_value(rounding="ROUND_FLOOR")) for x in exact]
    left = amount - sum(floors)
    if sum(parts) != whole or left <= 0:
        return floors
    order = sorted(range(len(parts)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    return floors


def group_docs(
    groups: Mapping[GroupKey, Tally],
    b: Breakdown,
    aggregation: str,
    quantity: Decimal,
    amount: int | None,
) -> list[dict[str, Any]]:
    """The item's `groups`: each group's values, quantity and amount (its share of the item's
    amount by quantity for sum and count meters; null for the others, whose groups do not add
    up to the item's quantity)."""
    keys = sorted(groups)
    qty = [groups[k].quantity(aggregation) for k in keys]
    shares: list[int | None]
    if amount is not None and aggregation in ADDITIVE:
        shares = list(split_amount(amount, qty, quantity))
    else:
        shares = [None] * len(keys)
    return [
        {
            "dimensions": dict(zip(b.group_by, k, strict=True)),
            "quantity": num(q),
            "amount": s,
            "events": groups[k].events,
        }
        for k, q, s in zip(keys, qty, shares, strict=True)
    ]
