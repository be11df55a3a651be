"""Each event's combination of dimension values, through the cardinality guard (I/O, thin; the
rules are meter/dimensions.py). Runs inside the caller's fold transaction (docs/dimensions.md)."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

import asyncpg
import orjson

from aggregator import queries
from aggregator.fold import BucketKey
from meter.dimensions import (
    OTHER,
    Versions,
    admit,
    combination,
    index_versions,
    shared_admission_holds,
    shared_admissions,
)
from meter.events import UsageEvent

log = logging.getLogger(__name__)

GuardSet = tuple[str, str, str, str, int]
"""(tenant, customer, meter, item or '', period start ms or 0): one set of the guard."""


async def dimension_versions(conn: asyncpg.Connection) -> dict[tuple[str, str], Versions]:
    """(tenant, meter) → its dimension versions, for meters that have any keys."""
    rows = await conn.fetch(queries.DIMENSION_VERSIONS)
    return index_versions([(r["tenant"], r["meter"], r["effective_from"], r["keys"]) for r in rows])


class _Crowded(Exception):
    """Sets locked shared whose size leaves too little room: they need their lock exclusive."""

    def __init__(self, sets: set[GuardSet]) -> None:
        super().__init__(f"{len(sets)} set(s) need their lock exclusive")
        self.sets = sets


def _set_key(s: GuardSet) -> str:
    return "\x1f".join((*s[:4], str(s[4])))


async def _lock(
    conn: asyncpg.Connection, sets: Sequence[GuardSet], exclusive: AbstractSet[GuardSet]
) -> set[GuardSet]:
    """Take the lock slots of `sets` (exclusive where a set of the slot is in `exclusive`, else
    shared) in ascending order; return the sets whose slot was taken shared."""
    row = await conn.fetchrow(
        queries.LOCK_GUARD_SETS,
        queries.DIMENSION_LOCK_CLASS,
        [_set_key(s) for s in sets],
        [s in exclusive for s in sets],
    )
    assert row is not None
    return {sets[n - 1] for n in row["shared"]}


def guard_set(key: BucketKey) -> GuardSet:
    return (key.tenant, key.customer, key.meter, key.item or "", key.period_start_ms or 0)


def _json(pairs: Sequence[tuple[GuardSet, str]]) -> str:
    """The pairs as the guard's statements take them (queries._GUARD_INPUT), numbered from 1."""
    return orjson.dumps([[*s, d] for s, d in pairs]).decode()


async def guard(
    conn: asyncpg.Connection,
    wanted: Sequence[tuple[GuardSet, str]],
    limit: int,
    admitted: AbstractSet[tuple[GuardSet, str]] = frozenset(),
    *,
    shared: bool = False,
) -> dict[tuple[GuardSet, str], str]:
    """The combination each (set, combination) pair is folded under, `wanted` in stream order
    of first events. Admissions are written here, in the caller's transaction. `admitted`:
    pairs known committed already (a cache: sets only ever grow, so they stay admitted).
    `shared`: the caller is a flush past its checkpoint compare-and-set (flush.py step 4), so
    it may take set locks shared (queries.GUARD_STATE counts it among the flushes in flight);
    anyone else takes them exclusively."""
    distinct = list(dict.fromkeys(wanted))
    unsure = [p for p in distinct if p not in admitted]
    if not unsure:  # the usual case once a worker has seen a customer's combinations
        return {p: p[1] for p in distinct}
    # Optimisation: first read, without any lock, which of these pairs are committed already. A
    # committed pair stays admitted (sets only grow), so the answer holds whatever other flushes
    # do; only the sets of pairs still unknown need the lock. Known combinations (a steady
    # stream) so take no lock at all, and lanes do not wait on each other for them.
    missing = {r["n"] for r in await conn.fetch(queries.UNKNOWN_COMBOS, _json(unsure))}
    if not missing:
        return {p: p[1] for p in distinct}
    known = {p for p in distinct if p in admitted}
    known.update(p for n, p in enumerate(unsure, 1) if n not in missing)
    unsure = [p for n, p in enumerate(unsure, 1) if n in missing]
    # The sets of the still unknown pairs are locked (queries.LOCK_GUARD_SETS), then read: what
    # another shard's flush admitted before our lock is seen now. A flush (`shared`) takes a set's
    # lock shared when it brings at most B new combinations to it, and keeps it so only if the
    # size read after the lock leaves room for every flush in flight to admit B
    # (meter.dimensions.shared_admission_holds); otherwise the set's lock is exclusive. Shared
    # holders do not wait on each other: two lanes folding new combinations of the same
    # customers no longer serialize on their slots.
    per_set = Counter(s for s, _ in unsure)
    sets = list(per_set)
    bound = shared_admissions(limit)
    exclusive = {s for s in sets if not shared or per_set[s] > bound}
    while True:
        sizes: dict[GuardSet, int] = {}
        found: set[tuple[GuardSet, str]] = set()
        try:
            # A savepoint only when a slot may be taken shared: if a shared set turns out too
            # full, rolling back to it releases the locks it took, and all are taken again in
            # ascending order (upgrading a held shared lock could deadlock with another flush).
            savepoint = len(exclusive) < len(sets)
            async with conn.transaction() if savepoint else contextlib.nullcontext():
                shared_sets = await _lock(conn, sets, exclusive)
                writers = 0
                for r in await conn.fetch(queries.GUARD_STATE, _json(unsure)):
                    pair = unsure[r["n"] - 1]
                    sizes[pair[0]] = r["size"]
                    writers = r["writers"]
                    if r["known"]:
                        found.add(pair)
                crowded = {
                    s for s in shared_sets if not shared_admission_holds(sizes[s], writers, limit)
                }
                if crowded:
                    raise _Crowded(crowded)
            break
        except _Crowded as e:
            exclusive |= e.sets
    known |= found
    decided, new = admit(distinct, known, sizes, limit)
    if new:
        # In the one key order of every flush: holders of a shared set lock may insert the same
        # pair at once, and the later waits for the earlier to commit; two flushes inserting in
        # opposite orders would each wait for the other (a deadlock).
        await conn.execute(queries.ADMIT_COMBOS, _json(sorted(new)))
    return {p: decided[p] for p in distinct}


async def with_dimensions(
    conn: asyncpg.Connection,
    pairs: list[tuple[BucketKey, UsageEvent]],
    versions: dict[tuple[str, str], Versions],
    limit: int,
    admitted: set[tuple[GuardSet, str]] | None = None,
    *,
    shared: bool = False,
) -> tuple[list[tuple[BucketKey, UsageEvent]], int, list[tuple[GuardSet, str]]]:
    """`pairs` with each bucket key carrying its event's folded combination, how many events
    went to `_other`, and the (set, combination) pairs admitted once the caller commits (for
    its cache `admitted`, which it must only grow after that commit). Events of meters without
    dimensions keep their key as it is. `shared`: as `guard` takes it."""
    if not versions:
        return pairs, 0, []
    # Optimisation: per event only dictionary lookups. The combination text is built once per
    # distinct (keys, values) and the guard set and folded key once per (bucket, combination):
    # building them per event was most of the Python cost of dimensions.
    texts: dict[tuple[tuple[str, ...], tuple[object, ...]], str] = {}
    sets: dict[BucketKey, GuardSet] = {}
    combos: list[str] = []
    wanted: list[tuple[GuardSet, str]] = []
    for key, e in pairs:
        v = versions.get((e.tenant, e.meter))
        keys = v.at(e.timestamp_ms) if v is not None else ()
        if keys:
            props = e.properties or {}
            values = tuple(props.get(k) for k in keys)
            # Memo only for text values: 1, 1.0 and True are equal keys but distinct values.
            if all(type(x) is str for x in values):
                c = texts.get((keys, values))
                if c is None:
                    c = texts[(keys, values)] = combination(props, keys)
            else:
                c = combination(props, keys)
            s = sets.get(key)
            if s is None:
                s = sets[key] = guard_set(key)
            wanted.append((s, c))
        else:
            c = ""
        combos.append(c)
    if not wanted:
        return pairs, 0, []
    decided = await guard(
        conn, wanted, limit, admitted if admitted is not None else frozenset(), shared=shared
    )
    folded_keys: dict[tuple[BucketKey, str], BucketKey] = {}
    out: list[tuple[BucketKey, UsageEvent]] = []
    other = 0
    for (key, e), c in zip(pairs, combos, strict=True):
        if not c:
            out.append((key, e))
            continue
        k = folded_keys.get((key, c))
        if k is None:
            k = folded_keys[(key, c)] = key.with_dims(decided[(sets[key], c)])
        if k.dims == OTHER:
            other += 1
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
        await conn.execute(queries.ADMIT_COMBOS, _json(pairs))
