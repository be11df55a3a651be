"""MeterClient's reads against the real server: usage and history with dimension breakdowns,
checked against sums of the events the test posted; the errors they raise."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from meter.config import Settings
from meter_client import (
    AuthenticationFailed,
    ClientClosed,
    MeterClient,
    MeterClientSync,
    RequestFailed,
)
from tests.integration.client.conftest import base_url
from tests.integration.usage.conftest import HOUR, at, drain, seed_customer, seed_plan

Client = TestClient[object, object]
ITEM = "si_m_c-1"  # seed_plan's metered item, on meter `calls`


@dataclass(frozen=True)
class Posted:
    model: str | None
    region: str
    value: int


# Aggregated first, then left pending: the groups must count both.
AGGREGATED = [
    Posted("large", "eu", 40),
    Posted("large", "us", 60),
    Posted("small", "eu", 50),
    Posted(None, "eu", 7),  # no model: the server groups it under `none`
]
PENDING = [Posted("small", "eu", 5), Posted("small", "us", 3), Posted("large", "eu", 11)]


def oracle(
    events: Iterable[Posted], group_by: Sequence[str], filters: Mapping[str, str]
) -> dict[tuple[str, ...], tuple[Decimal, int]]:
    """(quantity, events) per combination, summed from what the test posted."""
    out: dict[tuple[str, ...], tuple[Decimal, int]] = {}
    for e in events:
        values = {"model": e.model or "none", "region": e.region}
        if any(values[k] != v for k, v in filters.items()):
            continue
        key = tuple(values[k] for k in group_by)
        quantity, count = out.get(key, (Decimal(0), 0))
        out[key] = (quantity + e.value, count + 1)
    return out


def groups_of(doc: dict[str, Any], group_by: Sequence[str]) -> dict[tuple[str, ...], Any]:
    [item] = [i for i in doc["items"] if i["subscription_item"] == ITEM]
    return {
        tuple(g["dimensions"][k] for k in group_by): (Decimal(g["quantity"]), g["events"])
        for g in item["groups"]
    }


async def declare(db: asyncpg.Connection, since: int) -> None:
    await db.execute(
        "INSERT INTO meter_dimensions (tenant, meter, effective_from, keys)"
        " VALUES ('acme', 'calls', $1, '{model,region}')",
        at(since),
    )


async def record(
    meter: MeterClient, events: Sequence[Posted], when: int, tag: str, customer: str = "c-1"
) -> None:
    for n, e in enumerate(events):
        props = {"region": e.region} | ({} if e.model is None else {"model": e.model})
        await meter.record(
            customer, "calls", e.value, id=f"{tag}-{n}", timestamp=when, properties=props
        )
    await meter.flush()
    assert meter.stats.failed == meter.stats.rejected == 0


@pytest.fixture
async def seeded(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> int:
    """c-1 on a subscription with `calls` broken down by model and region: AGGREGATED folded
    by the aggregator, PENDING accepted after it; returns the events' time."""
    plan = await seed_plan(db)
    await declare(db, plan.current[0])
    when = int(time.time()) // HOUR * HOUR - 2 * HOUR + 60
    async with MeterClient(base_url(client), api_key) as meter:
        await record(meter, AGGREGATED, when, "a")
        assert await drain(settings, redis) == len(AGGREGATED)
        await record(meter, PENDING, when, "p")
    return when


async def test_usage_groups_equal_the_posted_events(
    client: Client, api_key: str, seeded: int
) -> None:
    everything = AGGREGATED + PENDING
    async with MeterClient(base_url(client), api_key) as meter:
        plain = await meter.usage("c-1")
        by_both = await meter.usage("c-1", group_by=["model", "region"])
        eu = await meter.usage("c-1", period="current", group_by="model", filters={"region": "eu"})
    [item] = [i for i in plain["items"] if i["subscription_item"] == ITEM]
    assert Decimal(item["quantity"]) == sum(e.value for e in everything)
    assert "groups" not in item  # nothing asked, nothing broken down

    assert groups_of(by_both, ["model", "region"]) == oracle(everything, ["model", "region"], {})
    assert groups_of(eu, ["model"]) == oracle(everything, ["model"], {"region": "eu"})
    assert set(groups_of(eu, ["model"])) == {("large",), ("small",), ("none",)}
    [whole] = [i for i in eu["items"] if i["subscription_item"] == ITEM]
    assert whole["quantity"] == item["quantity"]  # a filter narrows the groups, not the item


async def test_history_rows_carry_their_dimensions(
    client: Client, api_key: str, seeded: int, redis: Redis, settings: Settings
) -> None:
    hour = seeded // HOUR * HOUR
    async with MeterClient(base_url(client), api_key) as meter:
        # A row of another hour: `from_`/`to` must keep it out of the answers below.
        await meter.record("c-1", "calls", 1000, id="other-hour", timestamp=hour - HOUR)
        await meter.flush()
        assert await drain(settings, redis) == 1 + len(PENDING)
        grouped = await meter.usage_history(
            "c-1",
            from_=dt.datetime.fromtimestamp(hour, dt.UTC),
            to=hour + HOUR,
            meter="calls",
            group_by=["model", "region"],
        )
        filtered = await meter.usage_history(
            "c-1", from_=hour, to=hour + HOUR, group_by=["model"], filters={"region": "us"}
        )
        daily = await meter.usage_history("c-1", from_=hour, to=hour + HOUR, granularity="day")
    # History is what the aggregator folded, by now PENDING too.
    assert grouped["group_by"] == ["model", "region"]
    assert {(r["start"], r["end"]) for r in grouped["data"]} == {(hour, hour + HOUR)}
    rows = {
        (r["dimensions"]["model"], r["dimensions"]["region"]): (Decimal(r["value"]), r["events"])
        for r in grouped["data"]
    }
    assert rows == oracle(AGGREGATED + PENDING, ["model", "region"], {})
    assert filtered["filter"] == {"region": "us"}
    assert [(r["dimensions"], Decimal(r["value"])) for r in filtered["data"]] == [
        ({"model": m}, q)
        for (m,), (q, _) in sorted(
            oracle(AGGREGATED + PENDING, ["model"], {"region": "us"}).items()
        )
    ]
    assert daily["granularity"] == "day"
    assert {r["end"] - r["start"] for r in daily["data"]} == {86400}


async def test_history_pages_follow_the_cursor(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    plan = await seed_plan(db)
    await declare(db, plan.current[0])
    first = int(time.time()) // HOUR * HOUR - 3 * HOUR
    async with MeterClient(base_url(client), api_key) as meter:
        await record(meter, AGGREGATED, first + 60, "h1")
        await record(meter, AGGREGATED[:2], first + HOUR + 60, "h2")
        assert await drain(settings, redis) == 6
        pages = [
            await meter.usage_history(
                "c-1", from_=first, to=first + 2 * HOUR, group_by=["model"], limit=1
            )
        ]
        while pages[-1]["has_more"]:
            cursor = pages[-1]["next_cursor"]
            pages.append(
                await meter.usage_history(
                    "c-1",
                    from_=first,
                    to=first + 2 * HOUR,
                    group_by=["model"],
                    limit=1,
                    cursor=cursor,
                )
            )
            assert len(pages) <= 2, "the cursor must move on"
    assert [{r["start"] for r in p["data"]} for p in pages] == [{first}, {first + HOUR}]
    assert {r["dimensions"]["model"]: Decimal(r["value"]) for r in pages[1]["data"]} == {
        "large": Decimal(100)
    }


async def test_customer_ids_are_quoted_whole(
    client: Client, api_key: str, db: asyncpg.Connection
) -> None:
    customer = "team/a b?x=1&y#%"  # each character would change the URL unless quoted
    await seed_customer(db, customer, "cus_quoted")
    async with MeterClient(base_url(client), api_key) as meter:
        await meter.record(customer, "calls", 4, id="q-1")
        await meter.flush()
        usage = await meter.usage(customer)
        history = await meter.usage_history(customer, group_by=["model"])
        with pytest.raises(ValueError, match="URL path"):
            await meter.usage("..")
    assert usage["customer"] == history["customer"] == customer
    # No subscription: its usage per meter for the calendar month, the pending event included.
    assert [(i["meter"], i["quantity"]) for i in usage["items"]] == [("calls", "4")]


async def test_errors_raise_request_failed_with_the_servers_error(
    client: Client, api_key: str, seeded: int
) -> None:
    async with MeterClient(base_url(client), api_key) as meter:
        with pytest.raises(RequestFailed) as unknown:
            await meter.usage("no-such-customer", group_by=["model"])
        with pytest.raises(RequestFailed) as history_unknown:
            await meter.usage_history("no-such-customer")
        with pytest.raises(RequestFailed) as bad_group:
            await meter.usage("c-1", group_by=["model", "bad key"])
        with pytest.raises(RequestFailed) as bad_filter:
            await meter.usage_history("c-1", filters={"model": ""})
        with pytest.raises(RequestFailed) as bad_limit:
            await meter.usage_history("c-1", limit=0)
        # The reads failing stops nothing: the same client still reads.
        assert (await meter.usage("c-1"))["customer"] == "c-1"
    for failed in (unknown.value, history_unknown.value):
        assert (failed.status, failed.error_type, failed.param) == (404, "not_found", "id")
        assert "no-such-customer" in failed.message
    assert (bad_group.value.status, bad_group.value.error_type) == (400, "invalid_request_error")
    assert "bad key" in bad_group.value.message
    assert (bad_filter.value.status, bad_filter.value.param) == (400, "filter[model]")
    assert (bad_limit.value.status, bad_limit.value.param) == (400, "limit")
    assert str(bad_limit.value).startswith("HTTP 400 invalid_request_error: ")


async def test_a_wrong_key_raises_request_failed_401(client: Client) -> None:
    async with MeterClient(base_url(client), "mk_wrong") as meter:
        with pytest.raises(RequestFailed) as usage:
            await meter.usage("c-1")
        with pytest.raises(RequestFailed) as history:
            await meter.usage_history("c-1")
    for failed in (usage.value, history.value):
        assert (failed.status, failed.error_type) == (401, "authentication_error")
        assert not isinstance(failed, AuthenticationFailed)  # no batch, no events to carry
        assert failed.message


async def test_no_answer_raises_request_failed_without_status() -> None:
    """Not the real server: one that never answers, and one that answers like a broken proxy."""
    never = asyncio.Event()
    seen: list[web.Request] = []

    async def hang(request: web.Request) -> web.Response:
        seen.append(request)
        await never.wait()
        return web.Response()

    async def proxy_error(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(status=502, text="<html>bad gateway</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/v1/customers/{id}/usage", hang)
    app.router.add_get("/v1/customers/{id}/usage/history", proxy_error)
    server = TestServer(app)
    await server.start_server()
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    try:
        async with MeterClient(str(server.make_url("")), "mk_x", request_timeout=0.3) as meter:
            started = time.monotonic()
            with pytest.raises(RequestFailed) as timed_out:
                await meter.usage("c/1", group_by=["model", "region"], filters={"region": "e u"})
            assert time.monotonic() - started < 5  # one attempt, no retries
            with pytest.raises(RequestFailed) as bad_gateway:
                await meter.usage_history("c-1", from_="2026-01-01T00:00:00+01:00", cursor="abc")
        async with MeterClient(f"http://127.0.0.1:{closed_port}", "mk_x") as meter:
            with pytest.raises(RequestFailed) as refused:
                await meter.usage("c-1")
    finally:
        never.set()
        await server.close()
    assert (timed_out.value.status, timed_out.value.error_type) == (None, None)
    assert isinstance(timed_out.value.__cause__, TimeoutError)
    assert refused.value.status is None
    assert isinstance(refused.value.__cause__, aiohttp.ClientError)
    assert (bad_gateway.value.status, bad_gateway.value.error_type) == (502, None)
    assert bad_gateway.value.message == "Bad Gateway"
    assert len(seen) == 2  # neither read was retried
    # What went over the wire: the id quoted whole, the parameters by the server's names.
    assert seen[0].raw_path.startswith("/v1/customers/c%2F1/usage?")
    assert dict(seen[0].query) == {"group_by": "model,region", "filter[region]": "e u"}
    assert seen[0].headers["Authorization"] == "Bearer mk_x"
    assert dict(seen[1].query) == {"from": "2026-01-01T00:00:00+01:00", "cursor": "abc"}


async def test_reads_share_the_clients_session_and_end_with_it(
    client: Client, api_key: str, seeded: int
) -> None:
    async with aiohttp.ClientSession() as session:
        meter = MeterClient(base_url(client), api_key, session=session)
        assert (await meter.usage("c-1"))["customer"] == "c-1"
        await meter.aclose()
        assert not session.closed  # the caller's session stays the caller's
        with pytest.raises(ClientClosed):
            await meter.usage("c-1")
    own = MeterClient(base_url(client), api_key)
    await own.usage("c-1")
    session_made = own._session
    await own.aclose()
    assert session_made is not None
    assert session_made.closed  # a session the client made ends with it


async def test_sync_client_reads(client: Client, api_key: str, seeded: int) -> None:
    hour = seeded // HOUR * HOUR

    def product_service() -> tuple[dict[str, Any], dict[str, Any], RequestFailed]:
        # Runs off the test's event loop, which serves the app meanwhile.
        with MeterClientSync(base_url(client), api_key) as meter:
            usage = meter.usage("c-1", group_by=["region"], filters={"model": "small"})
            history = meter.usage_history(
                "c-1", from_=hour, to=hour + HOUR, meter="calls", group_by=["region"]
            )
            try:
                meter.usage_history("c-1", granularity="week")  # type: ignore[arg-type]
            except RequestFailed as exc:
                return usage, history, exc
        raise AssertionError("a bad granularity must raise RequestFailed")

    usage, history, failed = await asyncio.to_thread(product_service)
    assert groups_of(usage, ["region"]) == oracle(
        AGGREGATED + PENDING, ["region"], {"model": "small"}
    )
    assert {r["dimensions"]["region"]: Decimal(r["value"]) for r in history["data"]} == {
        k[0]: q for k, (q, _) in oracle(AGGREGATED, ["region"], {}).items()
    }
    assert (failed.status, failed.param) == (400, "granularity")
