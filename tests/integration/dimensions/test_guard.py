"""The guard's statements against real Postgres: the combination of each event in one batch,
admissions and the lock-free read of combinations already admitted."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest

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


# --- shared set locks (aggregator/dimensions.py guard, meter.dimensions.shared_admission_holds) --

WRITERS = 2  # checkpoint rows: the flushes that may be in flight


async def _writers(db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO stream_checkpoints (stream) SELECT 's:' || i FROM generate_series(1, $1) i",
        WRITERS,
    )


async def _fill(db: asyncpg.Connection, n: int) -> None:
    """Admit n combinations to the set of _key() (committed)."""
    s = guard_set(_key())
    await db.executemany(
        "INSERT INTO usage_dimension_combos VALUES ($1, $2, $3, $4, $5, $6)",
        [(*s, f"fill{i}") for i in range(n)],
    )


async def _guard_locks(db: asyncpg.Connection, pid: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT objid, mode, granted FROM pg_locks WHERE locktype = 'advisory'"
        " AND classid = $1::bigint::oid AND pid = $2",
        queries.DIMENSION_LOCK_CLASS,
        pid,
    )
    return rows


async def _held_by(db: asyncpg.Connection, pid: int) -> list[asyncpg.Record]:
    """The guard locks of backend `pid` once it holds or waits for one."""
    for _ in range(500):
        rows = await _guard_locks(db, pid)
        if rows:
            return rows
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} took no guard lock")


async def _fold_one(
    conn: asyncpg.Connection, events: list[UsageEvent], limit: int
) -> list[BucketKey]:
    out, _, _ = await with_dimensions(
        conn, [(_key(), e) for e in events], VERSIONS, limit, shared=True
    )
    return [k for k, _ in out]


@pytest.fixture
async def two(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    a, b = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    yield a, b
    await a.close()
    await b.close()


async def test_shared_holders_do_not_wait_on_each_other(
    db: asyncpg.Connection, two: tuple[asyncpg.Connection, asyncpg.Connection]
) -> None:
    a, b = two
    await _writers(db)
    ta, tb = a.transaction(), b.transaction()
    await ta.start()
    await tb.start()
    # Far from the limit: both flushes bring a new combination to the same set.
    await _fold_one(a, [_event(0, "m0")], limit=1000)
    second = asyncio.ensure_future(_fold_one(b, [_event(1, "m1")], limit=1000))
    try:
        held_b = await _held_by(db, b.get_server_pid())
        held_a = await _guard_locks(db, a.get_server_pid())
        # The same slot, both granted, both shared: b did not wait for a to commit.
        assert [(r["objid"], r["mode"], r["granted"]) for r in held_a] == [
            (held_b[0]["objid"], "ShareLock", True)
        ]
        assert [(r["mode"], r["granted"]) for r in held_b] == [("ShareLock", True)]
    finally:
        await ta.rollback()  # had b waited, this lets it go on
        await second
        await tb.rollback()


async def test_a_crowded_set_or_many_new_combinations_take_the_lock_exclusively(
    db: asyncpg.Connection, two: tuple[asyncpg.Connection, asyncpg.Connection]
) -> None:
    a, b = two
    await _writers(db)
    limit = 40  # B = 1: shared while size + 2 · 1 <= 40
    await _fill(db, limit - 1)
    ta = a.transaction()
    await ta.start()
    try:
        # 39 + 2 > 40 once a's read is taken: a starts shared, finds the set too full,
        # rolls back to its savepoint and takes the slot exclusively.
        keys = await _fold_one(a, [_event(0, "m0")], limit)
        assert [k.dims for k in keys] == [combination({"model": "m0"}, ("model",))]
        held = await _guard_locks(db, a.get_server_pid())
        assert [(r["mode"], r["granted"]) for r in held] == [("ExclusiveLock", True)]
    finally:
        await ta.rollback()
    await db.execute("DELETE FROM usage_dimension_combos")
    ta, tb = a.transaction(), b.transaction()
    await ta.start()
    await tb.start()
    await _fold_one(a, [_event(0, "m0")], limit)  # shared: far from the limit
    # Two new combinations for one set (more than B): exclusive, so b waits for a.
    second = asyncio.ensure_future(_fold_one(b, [_event(1, "m1"), _event(2, "m2")], limit))
    try:
        held_b = await _held_by(db, b.get_server_pid())
        assert [(r["mode"], r["granted"]) for r in held_b] == [("ExclusiveLock", False)]
    finally:
        await ta.rollback()  # lets b go on
        assert len(await second) == 2
        await tb.rollback()


async def test_concurrent_flushes_never_exceed_the_limit(
    db: asyncpg.Connection, two: tuple[asyncpg.Connection, asyncpg.Connection]
) -> None:
    await _writers(db)
    limit = 24  # B = 1: shared while size <= 22, then exclusive
    rng = random.Random(7)
    decided: list[tuple[str, str]] = []
    rounds = 40
    # Round r of each lane: decided, not yet committed, while the other lane decides its own
    # (unless the other waits for our lock: then we go on after a short while).
    ready = [[asyncio.Event() for _ in range(rounds)] for _ in range(2)]

    async def lane(conn: asyncpg.Connection, lane_no: int) -> None:
        for round_ in range(rounds):
            # Eight sets (customers) fill up side by side: eight chances per run to meet at
            # the last slot. One combination per set and batch: more than B (one) would take
            # the set's slot exclusively, and then the whole batch waits for it.
            events = [
                UsageEvent(
                    "acme",
                    f"e{lane_no}-{round_}-{c}",
                    f"cus_{c}",
                    "tokens",
                    "1",
                    T0,
                    T0,
                    {"model": f"m{rng.randrange(60)}"},
                )
                for c in range(8)
            ]
            pairs = [
                (BucketKey("acme", e.customer, "tokens", None, None, T0, T0 + HOUR), e)
                for e in events
            ]
            async with conn.transaction():
                out, _, _ = await with_dimensions(conn, pairs, VERSIONS, limit, shared=True)
                decided.extend((k.customer, k.dims) for k, _ in out)
                ready[lane_no][round_].set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ready[1 - lane_no][round_].wait(), 0.05)

    await asyncio.gather(lane(two[0], 0), lane(two[1], 1))
    rows = await db.fetch("SELECT customer, dims FROM usage_dimension_combos")
    sizes = Counter(r["customer"] for r in rows)
    assert sizes == dict.fromkeys((f"cus_{c}" for c in range(8)), limit)  # full, never past
    assert {(c, d) for c, d in decided if d != OTHER} == {(r["customer"], r["dims"]) for r in rows}
    assert any(d == OTHER for _, d in decided)


async def test_shared_holders_admitting_the_same_pairs_in_opposite_orders_do_not_deadlock(
    db: asyncpg.Connection, two: tuple[asyncpg.Connection, asyncpg.Connection]
) -> None:
    # Under shared set locks two flushes may insert the same pairs at once; the second waits for
    # the first's commit. Inserted in stream order, two batches in opposite orders would meet in
    # the middle, each waiting for the other: Postgres would abort one with a deadlock.
    await _writers(db)
    events = [
        UsageEvent("acme", f"e{n}", f"cus_{n}", "tokens", "1", T0, T0, {"model": "m"})
        for n in range(2000)
    ]
    pairs = [
        (BucketKey("acme", e.customer, "tokens", None, None, T0, T0 + HOUR), e) for e in events
    ]

    async def flush(conn: asyncpg.Connection, batch: list[tuple[BucketKey, UsageEvent]]) -> int:
        async with conn.transaction():
            _, other, admitted = await with_dimensions(conn, batch, VERSIONS, 10, shared=True)
            await asyncio.sleep(0.05)  # both in flight
        assert other == 0
        return len(admitted)

    got = await asyncio.gather(flush(two[0], pairs), flush(two[1], pairs[::-1]))
    assert got == [2000, 2000]
    assert await db.fetchval("SELECT count(*) FROM usage_dimension_combos") == 2000
