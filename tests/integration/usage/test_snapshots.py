"""Usage snapshots read for a batch of requests in one statement (queries.ITEM_SNAPSHOT) on real
Postgres: each request gets exactly its own totals, its plan stays primary-key lookups whatever
the statistics, and concurrent HTTP requests get the answers they get alone."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from meter import appkeys
from meter.config import Settings
from meter.pricing import Period
from meter.usage import queries, routes, store
from tests.conftest import start_client

from .conftest import Client, at, calls, drain, get, post_events, seed_plan

START = 1_700_000_000
P1 = Period(START, START + 30 * 86400)
P0 = Period(START - 30 * 86400, START)
STREAMS = ["s:0", "s:1", "s:2"]


async def total(
    db: asyncpg.Connection,
    customer: str,
    item: str,
    period: Period,
    *,
    count: int,
    value: int,
    tenant: str = "acme",
    last_at: int = START,
) -> None:
    """One bucket of usage and its running total, as the aggregator writes them together."""
    args = (tenant, customer, item, at(period.start), count, value, at(last_at))
    await db.execute(
        "INSERT INTO usage_rollups (tenant, customer, meter, subscription_item, period_start,"
        " bucket_start, bucket_end, event_count, value_sum, value_max, last_value, last_at,"
        " last_event_id) VALUES ($1, $2, 'calls', $3, $4, $4,"
        " $4::timestamptz + interval '1 hour', $5, $6, $6, $6, $7, 'e')",
        *args,
    )
    await db.execute(
        "INSERT INTO usage_totals VALUES ($1, $2, $3, $4, 'calls', $5, $6, $6, $6, $7, 'e', 0)",
        *args,
    )


def summary(snap: store.Snapshot) -> dict[tuple[str, str], tuple[int, Decimal, Any, Any]]:
    return {k: (t.events, t.total, t.maximum, t.last) for k, t in snap.by_item.items()}


async def test_a_batch_gives_each_request_exactly_its_own_totals(db: asyncpg.Connection) -> None:
    await total(db, "a", "si_a", P1, count=2, value=3)
    await total(db, "cus_a", "si_a", P1, count=1, value=4, last_at=START + 60)  # A's other key
    await total(db, "b", "si_b", P1, count=7, value=70)
    await total(db, "b", "si_b", P0, count=5, value=50)  # B's previous period
    await total(db, "a", "si_a", P1, count=9, value=900, tenant="other")  # same names, other tenant
    await db.execute(
        "INSERT INTO stream_checkpoints (stream, last_id) VALUES ('s:0', '5-0'), ('s:1', '7-1')"
    )
    wanted = [
        store.ItemUsage("acme", ["a", "cus_a"], {"si_a": P1}),
        store.ItemUsage("acme", ["b"], {"si_b": P1}),
        store.ItemUsage("acme", ["c"], {"si_c": P1}),  # no usage yet
        store.ItemUsage("other", ["a"], {"si_a": P1}),
        store.ItemUsage("acme", ["b"], {"si_b": P0}),
    ]

    batch = await store.read_item_usage(db, STREAMS, wanted)

    assert [summary(s) for s in batch] == [
        {("si_a", "calls"): (3, Decimal(7), Decimal(4), Decimal(4))},
        {("si_b", "calls"): (7, Decimal(70), Decimal(70), Decimal(70))},
        {},
        {("si_a", "calls"): (9, Decimal(900), Decimal(900), Decimal(900))},
        {("si_b", "calls"): (5, Decimal(50), Decimal(50), Decimal(50))},
    ]
    for snap in batch:
        assert snap.checkpoints == {"s:0": "5-0", "s:1": "7-1"}
    for one, snap in zip(wanted, batch, strict=True):
        [alone] = await store.read_item_usage(db, STREAMS, [one])
        assert summary(alone) == summary(snap)


def scans_of(plan: Any, table: str) -> list[str]:
    """The node types that read `table` in an EXPLAIN (FORMAT JSON) plan."""
    found = [plan["Node Type"]] if plan.get("Relation Name") == table else []
    for child in plan.get("Plans", []):
        found += scans_of(child, table)
    return found


async def generic_plan(conn: Any) -> Any:
    """ITEM_SNAPSHOT's plan as the plan cache keeps it (the generic plan), on this connection."""
    async with conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        doc = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) " + queries.ITEM_SNAPSHOT,
            STREAMS,
            orjson.dumps(
                [{"n": 0, "t": "acme", "c": "a", "i": "si_a", "p": P1.start, "e": P1.end}]
            ).decode(),
            [b"\x00" * 16],
        )
    return orjson.loads(doc)[0]["Plan"]


async def test_the_snapshot_plan_made_on_a_small_table_looks_up_by_primary_key(
    db: asyncpg.Connection, settings: Settings
) -> None:
    # Statistics of a tiny usage_totals, as on a new deployment: a plan made now and kept
    # while the table grows must not read the whole table for each request.
    for n in range(3):
        await total(db, f"c{n}", "si", P1, count=1, value=1)
    await db.execute("ANALYZE usage_totals")
    # The premise: on an ordinary connection that plan is a sequential scan.
    assert "Seq Scan" in scans_of(await generic_plan(db), "usage_totals")

    client = await start_client(settings)
    try:
        async with client.app[appkeys.USAGE_PG].acquire() as conn:
            plan = await generic_plan(conn)
            scans = scans_of(plan, "usage_totals")
            outbox = scans_of(plan, "report_outbox")
            folded = scans_of(plan, "usage_event_keys")
            jit = await conn.fetchval("SHOW jit")
    finally:
        await client.close()
    assert scans
    assert all(s in ("Index Scan", "Index Only Scan") for s in scans), scans
    # The reporter's carried rows, on their partial indexes.
    assert len(outbox) == 2
    assert all(s in ("Index Scan", "Bitmap Heap Scan") for s in outbox), outbox
    # Flagged pending entries' keys: primary-key lookups, never a scan of every key.
    assert folded
    assert all(s in ("Index Scan", "Index Only Scan") for s in folded), folded
    assert jit == "off"


async def test_concurrent_requests_get_the_answers_they_get_alone(
    client: Client, api_key: str, db: asyncpg.Connection, settings: Settings, redis: Redis
) -> None:
    customers = [f"c-{n}" for n in range(5)]
    now = int(time.time())
    for n, customer in enumerate(customers):
        await seed_plan(db, customer)
        await post_events(client, api_key, calls(customer, f"e{n}", [n + 1] * (n + 2), now))
    await drain(settings, redis)
    # Pending (not aggregated) events too, one customer's only.
    await post_events(client, api_key, calls("c-3", "late", [100], now))

    def money(doc: Any) -> Any:
        return [(i["meter"], i["quantity"], i["amount"]) for i in doc["items"]], doc["invoice"]

    alone = {}
    for customer in customers:
        status, doc = await get(client, api_key, f"/v1/customers/{customer}/usage")
        assert status == 200, doc
        alone[customer] = money(doc)
    # c-3: five aggregated events of 4, and one pending of 100.
    assert [q for m, q, _ in alone["c-3"][0] if m == "calls"] == ["120"]

    together = customers * 6
    answers = await asyncio.gather(
        *(get(client, api_key, f"/v1/customers/{c}/usage") for c in together)
    )
    for customer, (status, doc) in zip(together, answers, strict=True):
        assert status == 200, doc
        assert money(doc) == alone[customer], customer


async def test_a_stuck_snapshot_statement_fails_its_batch_and_the_next_one_runs(
    api_key: str, db: asyncpg.Connection, settings: Settings, monkeypatch: Any
) -> None:
    monkeypatch.setattr(routes, "SNAPSHOT_TIMEOUT_S", 0.5)
    await seed_plan(db, "c-1")
    client = await start_client(settings)
    blocker = await asyncpg.connect(settings.database_url)
    try:
        # Another transaction holds usage_totals: the snapshot statement waits on its lock, as
        # it would on a half-open connection, until the timeout ends it.
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE usage_totals IN ACCESS EXCLUSIVE MODE")
            status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
            assert status == 500, doc
        status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
        assert status == 200, doc
    finally:
        await blocker.close()
        await client.close()
