"""`meter migrate` on real Postgres: order, idempotency, concurrency, checksum guard."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import asyncpg
import pytest

from meter.errors import MigrationError
from meter.migrate import load, migrate
from tests.conftest import TOTALS_DRIFT, migrations_before

# The schema all migrations together must produce: table → columns (name, type, nullable).
EXPECTED = {
    "api_keys": {
        ("id", "bigint", "NO"),
        ("tenant", "text", "NO"),
        ("name", "text", "NO"),
        ("key_hash", "bytea", "NO"),
        ("key_prefix", "text", "NO"),
        ("created_at", "timestamp with time zone", "NO"),
        ("revoked_at", "timestamp with time zone", "YES"),
    },
    "schema_migrations": {
        ("version", "integer", "NO"),
        ("name", "text", "NO"),
        ("checksum", "text", "NO"),
        ("applied_at", "timestamp with time zone", "NO"),
    },
}


# Every table and view, with the columns of the foundation's checked in detail above.
ALL_TABLES = {
    *EXPECTED,
    "usage_events",
    "usage_rollups",
    "usage_unique_values",
    "stream_checkpoints",
    "meter_definitions",
    "usage_rollup_values",
    # 0007_usage_totals
    "usage_totals",
    # 0008_event_keys (replaces 0002's usage_event_ids)
    "usage_event_keys",
    # 0003_billing
    "customers",
    "products",
    "prices",
    "billing_meters",
    "subscriptions",
    "subscription_items",
    "subscription_item_periods",
    "invoices",
    "stripe_events",
    "payment_failures",
    "dunning",
    "meter_error_reports",
    "billing_sync_cursors",
    # 0004_reporter
    "report_marks",
    "report_outbox",
    # 0005_voids
    "usage_voids",
    # 0012_meter_formulas
    "stripe_meter_formulas",
    # 0016_billing_mode_pending_items
    "pending_invoice_items",
    "meter_dimensions",
    "usage_dimension_combos",
    "meter_price_mappings",
    # 0020_webhook_events
    "webhook_events",
    # 0021_webhook_deliveries
    "webhook_endpoints",
    "webhook_endpoint_secrets",
    "webhook_deliveries",
    "webhook_delivery_attempts",
    # 0022_alert_rules
    "alert_rules",
    "alert_firings",
    "alert_states",
    "alert_limits",
}


async def schema(conn: asyncpg.Connection) -> dict[str, set[tuple[str, str, str]]]:
    rows = await conn.fetch(
        """SELECT table_name, column_name, data_type, is_nullable
           FROM information_schema.columns WHERE table_schema = 'public'"""
    )
    found: dict[str, set[tuple[str, str, str]]] = {}
    for r in rows:
        found.setdefault(r["table_name"], set()).add(
            (r["column_name"], r["data_type"], r["is_nullable"])
        )
    return found


async def test_applies_all_then_nothing(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        first = await migrate(conn)
        assert [m.version for m in first] == [m.version for m in load()]
        assert await migrate(conn) == []
        found = await schema(conn)
        assert set(found) == ALL_TABLES
        for table, columns in EXPECTED.items():
            assert found[table] == columns, table
        applied = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        assert {(r["version"], r["checksum"]) for r in applied} == {
            (m.version, m.checksum) for m in load()
        }
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_each_file_once(empty_database_url: str) -> None:
    conns = [await asyncpg.connect(empty_database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(load())]
    finally:
        for c in conns:
            await c.close()


async def test_changed_applied_file_is_an_error(empty_database_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_one.sql").write_text("CREATE TABLE one (x int);")
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert len(await migrate(conn, tmp_path)) == 1
        (tmp_path / "0001_one.sql").write_text("CREATE TABLE one (x bigint);")
        with pytest.raises(MigrationError, match="changed after"):
            await migrate(conn, tmp_path)
    finally:
        await conn.close()


async def test_failed_migration_leaves_nothing_behind(
    empty_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_one.sql").write_text("CREATE TABLE one (x int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE two (x int); SELECT no_such_function();")
    conn = await asyncpg.connect(empty_database_url)
    try:
        with pytest.raises(asyncpg.PostgresError):
            await migrate(conn, tmp_path)
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables")}
        assert "one" in tables
        assert "two" not in tables
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 1
        # The lock was released: a fixed file applies.
        (tmp_path / "0002_bad.sql").write_text("CREATE TABLE two (x int);")
        assert [m.version for m in await migrate(conn, tmp_path)] == [2]
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("names", "message"),
    [(["0001_a.sql", "0003_c.sql"], "0002 is missing"), (["1_a.sql"], "NNNN_name.sql")],
)
def test_bad_file_sets_are_refused(tmp_path: Path, names: list[str], message: str) -> None:
    for name in names:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=message):
        load(tmp_path)


async def test_usage_totals_backfill_existing_buckets(
    empty_database_url: str, tmp_path: Path
) -> None:
    """An upgrade: buckets written before 0007 get their running totals when it is applied."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn, migrations_before(7, tmp_path))
        await conn.execute(
            """
            INSERT INTO usage_rollups (tenant, customer, meter, subscription_item, period_start,
                bucket_start, bucket_end, event_count, value_sum, value_max, last_value, last_at,
                last_event_id, unique_count)
            SELECT 't', 'c' || (h % 3), 'm',
                CASE WHEN h % 5 = 0 THEN NULL ELSE 'si_' || (h % 3) END,
                CASE WHEN h % 5 = 0 THEN NULL ELSE timestamptz '2026-11-01' END,
                timestamptz '2026-11-01' + h * interval '1 hour',
                timestamptz '2026-11-01' + (h + 1) * interval '1 hour',
                h + 1, h * 1.5, h, h % 7, timestamptz '2026-11-01' + h * interval '1 hour',
                'e' || h, h % 2
            FROM generate_series(0, 99) AS h
            """
        )
        await migrate(conn)
        assert await conn.fetchval("SELECT count(*) FROM usage_totals") == 3
        assert await conn.fetch(TOTALS_DRIFT) == []
    finally:
        await conn.close()


async def test_absolute_customer_units_start_from_the_latest_row_sent(
    empty_database_url: str, tmp_path: Path
) -> None:
    """An upgrade: a period reported per item gets one customer unit (item '') holding the value
    and second of its latest row of any item, at version 0, so its next version is planned and
    stamped after what Stripe holds; delta buckets' marks are left alone."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn, migrations_before(19, tmp_path))
        await conn.execute(
            """
            INSERT INTO report_marks (tenant, customer, meter, subscription_item, unit,
                unit_start, version, value, event_time)
            VALUES ('t', 'c', 'm', 'si_a', 'period', '2026-11-01', 4, 2, '2026-11-01 10:00'),
                   ('t', 'c', 'm', 'si_b', 'period', '2026-11-01', 3, 5, '2026-11-01 11:00'),
                   ('t', 'c', 'm', 'si_c', 'period', '2026-11-01', 1, 9, NULL),
                   ('t', 'c', 's', 'si_a', 'bucket', '2026-11-01', 7, 7, NULL)
            """
        )
        await migrate(conn)
        rows = await conn.fetch(
            "SELECT meter, unit, version, value, event_time FROM report_marks"
            " WHERE subscription_item = '' ORDER BY meter"
        )
        assert [tuple(r) for r in rows] == [
            ("m", "period", 0, 5, dt.datetime(2026, 11, 1, 11, tzinfo=dt.UTC))
        ]
    finally:
        await conn.close()


async def test_events_behind_the_old_fanout_cursor_stay_fanned_out(
    empty_database_url: str, tmp_path: Path
) -> None:
    """An upgrade from the cursor: events it had passed in its (xid, seq) order are marked
    fanned out (never sent twice), the ones after it are left for the notifier. `evt_early`
    takes its seq after `evt_late` but its transaction (xid) began before."""
    conn = await asyncpg.connect(empty_database_url)
    other = await asyncpg.connect(empty_database_url)
    insert = (
        "INSERT INTO webhook_events (id, tenant, type, data)"
        " VALUES ($1, 't', 'usage.limit_reached', '{}')"
    )
    try:
        await migrate(conn, migrations_before(24, tmp_path))
        await conn.execute(insert, "evt_1")
        async with other.transaction():
            await other.fetchval("SELECT pg_current_xact_id()")  # its xid, taken first
            await conn.execute(insert, "evt_late")  # a larger xid, a smaller seq
            await other.execute(insert, "evt_early")
        await conn.execute(insert, "evt_3")
        await conn.execute(
            "UPDATE webhook_fanout_cursor SET (xid, seq) ="
            " (SELECT xid, seq FROM webhook_events WHERE id = 'evt_early')"
        )
        await migrate(conn)
        rows = await conn.fetch("SELECT id, fanned_out FROM webhook_events ORDER BY seq")
        assert [tuple(r) for r in rows] == [
            ("evt_1", True),
            ("evt_late", False),
            ("evt_early", True),
            ("evt_3", False),
        ]
        await conn.execute(insert, "evt_new")  # new events wait for the notifier
        new = "SELECT fanned_out FROM webhook_events WHERE id = 'evt_new'"
        assert await conn.fetchval(new) is False
    finally:
        await other.close()
        await conn.close()
