"""Usage per combination of dimension values: `group_by` and `filter[…]` on the usage and history
routes; the totals stay what they are without them."""

from __future__ import annotations

import time
from decimal import Decimal

import asyncpg
from redis.asyncio import Redis

from meter.config import Settings
from meter.pricing import line_amount

from .conftest import GRADUATED, HOUR, Client, at, drain, engine_price, get, post_events, seed_plan


def _events(when: int) -> list[dict[str, object]]:
    rows = [
        ("large", "eu", 40),
        ("large", "us", 60),
        ("small", "eu", 50),
        (None, "eu", 7),  # no model: counts under `none`
    ]
    return [
        {
            "id": f"g-{i}",
            "customer": "c-1",
            "meter": "calls",
            "value": v,
            "timestamp": when,
            "properties": {"region": r} | ({} if m is None else {"model": m}),
        }
        for i, (m, r, v) in enumerate(rows)
    ]


async def _declare(db: asyncpg.Connection, since: int) -> None:
    await db.execute(
        "INSERT INTO meter_dimensions (tenant, meter, effective_from, keys)"
        " VALUES ('acme', 'calls', $1, '{model,region}')",
        at(since),
    )


async def test_usage_groups_split_quantity_and_amount(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    seeded = await seed_plan(db)
    await _declare(db, seeded.current[0])
    recent = int(time.time()) - 2 * HOUR
    await post_events(client, api_key, _events(recent)[:3])
    assert await drain(settings, redis) == 3
    await post_events(client, api_key, _events(recent)[3:])  # pending: not aggregated yet

    status, plain = await get(client, api_key, "/v1/customers/c-1/usage")
    assert status == 200, plain
    status, doc = await get(client, api_key, "/v1/customers/c-1/usage?group_by=model")
    assert status == 200, doc
    item = next(i for i in doc["items"] if i["subscription_item"] == "si_m_c-1")
    same = next(i for i in plain["items"] if i["subscription_item"] == "si_m_c-1")
    assert (
        (item["quantity"], item["amount"])
        == (same["quantity"], same["amount"])
        == (
            "157",
            line_amount(engine_price(GRADUATED), Decimal(157)),
        )
    )
    assert doc["invoice"] == plain["invoice"]
    groups = {g["dimensions"]["model"]: g for g in item["groups"]}
    assert {m: g["quantity"] for m, g in groups.items()} == {
        "large": "100",
        "small": "50",
        "none": "7",
    }
    assert sum(g["amount"] for g in groups.values()) == item["amount"]
    # Shares by quantity of the item's amount (529): 100/157, 50/157, 7/157.
    assert groups["large"]["amount"] in (336, 337)

    status, doc = await get(
        client, api_key, "/v1/customers/c-1/usage?group_by=region&filter[model]=large"
    )
    assert status == 200, doc
    item = next(i for i in doc["items"] if i["subscription_item"] == "si_m_c-1")
    assert item["quantity"] == "157"  # the item's own numbers never change
    assert [(g["dimensions"], g["quantity"]) for g in item["groups"]] == [
        ({"region": "eu"}, "40"),
        ({"region": "us"}, "60"),
    ]


async def test_history_groups_and_filters(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    seeded = await seed_plan(db)
    await _declare(db, seeded.current[0])
    recent = int(time.time()) // HOUR * HOUR - 2 * HOUR
    await post_events(client, api_key, _events(recent + 60))
    assert await drain(settings, redis) == 4
    base = f"/v1/customers/c-1/usage/history?from={recent}&to={recent + HOUR}&meter=calls"

    status, plain = await get(client, api_key, base)
    assert status == 200, plain
    assert [p["value"] for p in plain["data"]] == ["157"]
    status, doc = await get(client, api_key, base + "&group_by=model,region")
    assert status == 200, doc
    assert [(p["dimensions"], p["value"]) for p in doc["data"]] == [
        ({"model": "large", "region": "eu"}, "40"),
        ({"model": "large", "region": "us"}, "60"),
        ({"model": "none", "region": "eu"}, "7"),
        ({"model": "small", "region": "eu"}, "50"),
    ]
    status, doc = await get(client, api_key, base + "&filter[region]=eu")
    assert [(p.get("dimensions"), p["value"]) for p in doc["data"]] == [(None, "97")]


async def test_history_pages_keep_a_slot_whole(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    seeded = await seed_plan(db)
    await _declare(db, seeded.current[0])
    start = int(time.time()) // HOUR * HOUR - 3 * HOUR
    events = _events(start + 60) + [
        {**e, "id": f"h2-{e['id']}", "timestamp": start + HOUR + 60} for e in _events(0)
    ]
    await post_events(client, api_key, events)
    assert await drain(settings, redis) == 8
    path = (
        f"/v1/customers/c-1/usage/history?from={start}&to={start + 2 * HOUR}"
        "&group_by=model,region&limit=1"
    )
    status, first = await get(client, api_key, path)
    assert status == 200, first
    assert len(first["data"]) == 4
    assert {p["start"] for p in first["data"]} == {start}
    assert first["has_more"]
    status, second = await get(client, api_key, path + f"&cursor={first['next_cursor']}")
    assert {p["start"] for p in second["data"]} == {start + HOUR}
    assert len(second["data"]) == 4
    assert not second["has_more"]


async def test_bad_dimension_parameters_answer_400(client: Client, api_key: str) -> None:
    for query in (
        "group_by=a,b,c,d",
        "group_by=bad%20key",
        "filter=x",
        "filter[]=x",
        "filter[model]=",
        "filter[a]=1&filter[b]=1&filter[c]=1&filter[d]=1",
    ):
        for route in ("usage", "usage/history"):
            status, doc = await get(client, api_key, f"/v1/customers/c-1/{route}?{query}")
            assert status == 400, (route, query, doc)
