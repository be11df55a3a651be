"""Each event's combination of dimension values, through the cardinality guard (I/O, thin; the
rules are meter/dimensions.py). Runs inside the caller's fold transaction (docs/dimensions.md)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

import asyncpg

from aggregator import queries
from aggregator.fold import BucketKey
from meter.dimensions import OTHER, Versions, admit, combination, index_versions
from meter.events import UsageEvent

log = logging.getLogger(__name__)

GuardSet = tuple[str, str, str, str, int]
"""(tenant, customer, meter, item or '', period start ms or 0): one set of the guard."""


async def dimension_versions(conn: asyncpg.Connection) -> dict[tuple[str, str], Versions]:
    """(tenant, meter) → its dimension versions, for meters that have any keys."""
    rows = await conn.fetch(queries.DIMENSION_VERSIONS)
    return index_versions([(r["tenant"], r["meter"], r["effective_from"], r["keys"]) for r in rows])


def guard_set(key: BucketKey) -> GuardSet:
    return (key.tenant, key.customer, key.meter, key.item or "", key.period_start_ms or 0)


def _columns(pairs: Sequence[tuple[GuardSet, str]]) -> list[list[object]]:
    return [
        [s[0] for s, _ in pairs],
        [s[1] for s, _ in pairs],
        [s[2] for s, _ in pairs],
        [s[3] for s, _ in pairs],
        [s[4] for s, _ in pairs],
        [d for _, d in pairs],
    ]


async def _known(
    conn: asyncpg.Connection, pairs: Sequence[tuple[GuardSet, str]]
) -> set[tuple[GuardSet, str]]:
    rows = await conn.fetch(queries.ADMITTED_COMBOS, *_columns(pairs))
    return {
        ((r["tenant"], r["customer"], r["meter"], r["item"], r["period_ms"]), r["dims"])
        for r in rows
    }


async def guard(
    conn: asyncpg.Connection,
    wanted: Sequence[tuple[GuardSet, str]],
    limit: int,
    admitted: AbstractSet[tuple[GuardSet, str]] = frozenset(),
) -> dict[tuple[GuardSet, str], str]:
    """The combination each (set, combination) pair is folded under, `wanted` in stream order
    of first events. Admissions are written here, in the caller's transaction. `admitted`:
    pairs known committed already (a cache: sets only ever grow, so they stay admitted)."""
    distinct = list(dict.fromkeys(wanted))
    unsure = [p for p in distinct if p not in admitted]
    if not unsure:  # the usual case once a worker has seen a customer's combinations
        return {p: p[1] for p in distinct}
    # The sets of pairs the cache does not hold are locked (sorted: one order for every flush),
    # then read: what another shard's flush admitted before our lock is seen now.
    await conn.fetchval(
        queries.LOCK_GUARD_SETS,
        queries.DIMENSION_LOCK_CLASS,
        ["\x1f".join((*s[:4], str(s[4]))) for s in sorted({s for s, _ in unsure})],
    )
    known = {p for p in distinct if p in admitted} | await _known(conn, unsure)
    fresh = [p for p in unsure if p not in known]
    if not fresh:
        return {p: p[1] for p in distinct}
    sets = sorted({s for s, _ in fresh})
    rows = await conn.fetch(
        queries.SET_SIZES,
        [s[0] for s in sets],
        [s[1] for s in sets],
        [s[2] for s in sets],
        [s[3] for s in sets],
        [s[4] for s in sets],
    )
    sizes = {
        (r["tenant"], r["customer"], r["meter"], r["item"], r["period_ms"]): r["size"] for r in rows
    }
    decided, new = admit(distinct, known, sizes, limit)
    if new:
        await conn.execute(queries.ADMIT_COMBOS, *_columns(new))
    return {p: decided[p] for p in distinct}


async def with_dimensions(
    conn: asyncpg.Connection,
    pairs: list[tuple[BucketKey, UsageEvent]],
    versions: dict[tuple[str, str], Versions],
    limit: int,
    admitted: set[tuple[GuardSet, str]] | None = None,
) -> tuple[list[tuple[BucketKey, UsageEvent]], int, list[tuple[GuardSet, str]]]:
    """`pairs` with each bucket key carrying its event's folded combination, how many events
    went to `_other`, and the (set, combination) pairs admitted once the caller commits (for
    its cache `admitted`, which it must only grow after that commit). Events of meters without
    dimensions keep their key as it is."""
    if not versions:
        return pairs, 0, []
    combos: list[str] = []
    wanted: list[tuple[GuardSet, str]] = []
    for key, e in pairs:
        v = versions.get((e.tenant, e.meter))
        keys = v.at(e.timestamp_ms) if v is not None else ()
        c = combination(e.properties, keys) if keys else ""
        combos.append(c)
        if c:
            wanted.append((guard_set(key), c))
    if not wanted:
        return pairs, 0, []
    decided = await guard(conn, wanted, limit, admitted if admitted is not None else frozenset())
    cache: dict[tuple[BucketKey, str], BucketKey] = {}
    out: list[tuple[BucketKey, UsageEvent]] = []
    other = 0
    for (key, e), c in zip(pairs, combos, strict=True):
        if not c:
            out.append((key, e))
            continue
        folded = decided[(guard_set(key), c)]
        if folded == OTHER:
            other += 1
        k = cache.get((key, folded))
        if k is None:
            k = cache[(key, folded)] = key.with_dims(folded)
        out.append((k, e))
    if other:
        log.warning(
            "dimension combinations over the guard: usage folded into _other",
            extra={"events": other, "limit": limit},
        )
    return out, other, [p for p, folded in decided.items() if folded != OTHER]


async def add_combos(conn: asyncpg.Connection, keys: Sequence[BucketKey]) -> None:
    """Admit the combinations of buckets moved whole into a set, without the limit: usage
    already folded never moves to `_other` after the fact."""
    pairs = sorted({(guard_set(k), k.dims) for k in keys if k.dims and k.dims != OTHER})
    if pairs:
        await conn.execute(queries.ADMIT_COMBOS, *_columns(pairs))
