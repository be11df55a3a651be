"""The guard's statements against real Postgres: the combination of each event in one batch,
admissions and the lock-free read of combinations already admitted."""

from __future__ import annotations

import datetime as dt

import asyncpg

from aggregator import queries
from aggregator.dimensions import guard_set, with_dimensions
from aggregator.fold import BucketKey
from meter.dimensions import OTHER, combination, index_versions
from meter.events import UsageEvent

T0 = 1_700_000_000_000
HOUR = 3_600_000


def _event(n: int, model: object) -> UsageEvent:
    return UsageEvent("acme", f"e{n}", "cus_1", "tokens", "1", T0 + n, T0, {"model": model})


def _key() -> BucketKey:
    return BucketKey("acme", "cus_1", "tokens", None, None, T0, T0 + HOUR)


VERSIONS = index_versions([("acme", "tokens", dt.datetime(2020, 1, 1, tzinfo=dt.UTC), ["model"])])


async def test_values_equal_in_python_are_distinct_combinations(db: asyncpg.Connection) -> None:
    # 1, 1.0 and True compare (and hash) equal in Python but are distinct values in JSON.
    events = [_event(0, 1), _event(1, 1.0), _event(2, True), _event(3, 1), _event(4, [1])]
    tr = db.transaction()  # rolled back: the test leaves no admissions behind
    await tr.start()
    try:
        out, other, admitted = await with_dimensions(
            db, [(_key(), e) for e in events], VERSIONS, limit=10
        )
    finally:
        await tr.rollback()
    got = [k.dims for k, _ in out]
    assert got == [combination(e.properties, ("model",)) for e in events]
    assert len(set(got)) == 4
    assert other == 0
    assert len(admitted) == 4


async def test_known_combinations_stay_and_new_ones_meet_the_limit(
    db: asyncpg.Connection,
) -> None:
    events = [_event(n, f"m{n}") for n in range(4)]
    pairs = [(_key(), e) for e in events]
    tr = db.transaction()
    await tr.start()
    try:
        first, _, _ = await with_dimensions(db, pairs[:2], VERSIONS, limit=3)
        # A new batch: two known combinations (read without a lock), two new ones for one slot.
        second, other, admitted = await with_dimensions(db, pairs[::-1], VERSIONS, limit=3)
        combos = await db.fetchval("SELECT count(*) FROM usage_dimension_combos")
    finally:
        await tr.rollback()
    names = [combination(e.properties, ("model",)) for e in events]
    assert [k.dims for k, _ in first] == names[:2]
    # Stream order decides: m3 takes the last slot, m2 goes to _other; m1 and m0 stay.
    assert [k.dims for k, _ in second] == [names[3], OTHER, names[1], names[0]]
    assert other == 1
    assert combos == 3
    assert {p for p, _ in admitted} == {guard_set(_key())}


async def test_a_batch_of_many_sets_holds_a_bounded_number_of_locks(
    db: asyncpg.Connection,
) -> None:
    # 2,000 customers with a new combination each: a lock per set would hold 2,000 locks in one
    # transaction, and Postgres' shared lock table (max_locks_per_transaction × connections,
    # 6,400 by default) is what every other transaction needs too.
    events = [
        UsageEvent("acme", f"e{n}", f"cus_{n}", "tokens", "1", T0 + n, T0, {"model": "m"})
        for n in range(2000)
    ]
    pairs = [
        (BucketKey("acme", e.customer, "tokens", None, None, T0, T0 + HOUR), e) for e in events
    ]
    tr = db.transaction()
    await tr.start()
    try:
        _, other, admitted = await with_dimensions(db, pairs, VERSIONS, limit=10)
        held = await db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            " AND classid = $1::bigint::oid",
            queries.DIMENSION_LOCK_CLASS,
        )
    finally:
        await tr.rollback()
    assert other == 0
    assert len(admitted) == 2000
    assert 0 < held <= queries.GUARD_LOCK_SLOTS
