"""GET /v1/customers/{id}/usage/history: hour and day series from the rollups, pages, params."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from .conftest import DAY, HOUR, Client, at, get, seed_customer

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


async def bucket(
    db: asyncpg.Connection, customer: str, meter: str, start: int, value: int, n: int = 1
) -> None:
    await db.execute(
        "INSERT INTO usage_rollups (tenant, customer, meter, bucket_start, bucket_end,"
        " event_count, value_sum, value_max, last_value, last_at, last_event_id)"
        " VALUES ('acme', $1, $2, $3, $4, $5, $6, $6, $6, $3, $7)",
        customer,
        meter,
        at(start),
        at(start + HOUR),
        n,
        value,
        f"{meter}-{start}",
    )


@pytest.fixture
async def series(db: asyncpg.Connection) -> None:
    await seed_customer(db, "h-1", "cus_h1")
    await db.execute(
        "INSERT INTO meter_definitions (tenant, meter, aggregation) VALUES ('acme', 'gb', 'max')"
    )
    for hour, value in ((1, 5), (2, 7), (5, 1), (DAY // HOUR + 3, 10)):
        await bucket(db, "h-1", "calls", T0 + hour * HOUR, value, n=2)
    await bucket(
        db, "cus_h1", "calls", T0 + 2 * HOUR + DAY * 0, 100
    )  # the Stripe id: same customer
    await bucket(db, "h-1", "gb", T0 + HOUR, 4)
    await bucket(db, "h-1", "gb", T0 + 2 * HOUR, 3)
    await bucket(db, "other", "calls", T0 + HOUR, 999)  # someone else's usage


def _points(doc: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(p["meter"], p["start"] - T0, p["value"]) for p in doc["data"]]


async def test_hourly_and_daily_series(client: Client, api_key: str, series: None) -> None:
    base = f"/v1/customers/h-1/usage/history?from={T0}&to={T0 + 2 * DAY}"
    status, doc = await get(client, api_key, base + "&granularity=hour")
    assert status == 200, doc
    assert _points(doc) == [
        ("calls", 1 * HOUR, "5"),
        ("calls", 2 * HOUR, "107"),
        ("calls", 5 * HOUR, "1"),
        ("calls", DAY + 3 * HOUR, "10"),
        ("gb", 1 * HOUR, "4"),
        ("gb", 2 * HOUR, "3"),
    ]
    assert doc["has_more"] is False
    status, doc = await get(client, api_key, base + "&granularity=day")
    # Sum per day for a sum meter, max per day for a max meter.
    assert _points(doc) == [("calls", 0, "113"), ("calls", DAY, "10"), ("gb", 0, "4")]
    assert doc["data"][0]["events"] == 7
    assert doc["data"][0]["end"] - doc["data"][0]["start"] == DAY
    status, doc = await get(client, api_key, base + "&granularity=day&meter=gb")
    assert _points(doc) == [("gb", 0, "4")]


async def test_pages_walk_the_whole_series(client: Client, api_key: str, series: None) -> None:
    base = f"/v1/customers/cus_h1/usage/history?from=2026-01-01T00:00:00Z&to={T0 + 2 * DAY}"
    status, whole = await get(client, api_key, base)
    assert status == 200, whole
    pages: list[tuple[str, int, str]] = []
    url = base + "&limit=4"
    for _ in range(10):
        status, doc = await get(client, api_key, url)
        assert status == 200, doc
        assert len(doc["data"]) <= 4
        pages += _points(doc)
        if not doc["has_more"]:
            break
        url = base + f"&limit=4&cursor={doc['next_cursor']}"
    assert pages == _points(whole)
    assert len(pages) == 6


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("granularity=week", "granularity"),
        ("from=yesterday", "from"),
        (f"from={T0}&to={T0 - DAY}", "to"),
        (f"from={T0 - 1000 * DAY}&to={T0}", "from"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("cursor=%21%21%21", "cursor"),
    ],
)
async def test_bad_params_are_400_with_their_name(
    client: Client, api_key: str, series: None, query: str, param: str
) -> None:
    status, doc = await get(client, api_key, f"/v1/customers/h-1/usage/history?{query}")
    assert status == 400, doc
    assert (doc["error"]["type"], doc["error"]["param"]) == ("invalid_request_error", param)


async def test_unknown_customer_history_is_404(client: Client, api_key: str) -> None:
    status, doc = await get(client, api_key, "/v1/customers/nobody/usage/history")
    assert (status, doc["error"]["param"]) == (404, "id")
