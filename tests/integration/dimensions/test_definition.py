"""Declaring a meter's dimensions: `meter meters update`, the API route, `meter meters list`."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from meter.cli import _meters
from meter.config import Settings

Client = TestClient[object, object]


def _args(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"tenant": "default", "effective_from": None} | kw)


async def test_cli_update_then_list(
    settings: Settings, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    rc = await _meters(
        settings, _args(meters_command="update", name="tokens", dimensions="model,region")
    )
    assert rc == 0
    rc = await _meters(
        settings,
        _args(
            meters_command="update",
            name="tokens",
            dimensions="model",
            effective_from=later.isoformat(),
        ),
    )
    assert rc == 0
    capsys.readouterr()
    assert await _meters(settings, _args(meters_command="list", tenant=None)) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "\ttokens\t" in x)
    assert line.startswith("default\ttokens\t")
    assert line.endswith(f"model,region (from {later.isoformat()}: model)")
    rows = await db.fetch("SELECT keys FROM meter_dimensions ORDER BY effective_from")
    assert [r["keys"] for r in rows] == [["model", "region"], ["model"]]


async def test_cli_refuses_bad_keys_and_the_past(
    settings: Settings, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    for kw in (
        {"dimensions": "a,b,c,d"},
        {"dimensions": "model", "effective_from": "2020-01-01T00:00:00+00:00"},
        {"dimensions": "model", "effective_from": "not a time"},
    ):
        rc = await _meters(settings, _args(meters_command="update", name="tokens", **kw))
        assert rc == 2
    assert "past" in capsys.readouterr().err
    assert await db.fetchval("SELECT count(*) FROM meter_dimensions") == 0


async def test_api_route_sets_and_shows_the_versions(client: Client, api_key: str) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    later = int(time.time()) + 3600
    r = await client.put(
        "/v1/meters/tokens/dimensions", json={"dimensions": ["model", "region"]}, headers=auth
    )
    assert r.status == 200, await r.text()
    r = await client.put(
        "/v1/meters/tokens/dimensions",
        json={"dimensions": [], "effective_from": later},
        headers=auth,
    )
    doc = await r.json()
    assert doc["dimensions"] == ["model", "region"]
    assert [v["dimensions"] for v in doc["versions"]] == [["model", "region"], []]
    assert doc["versions"][1]["effective_from"] == later
    r = await client.get("/v1/meters/tokens/dimensions", headers=auth)
    assert (await r.json())["versions"] == doc["versions"]


@pytest.mark.parametrize(
    "body",
    [
        {"dimensions": ["a", "b", "c", "d"]},
        {"dimensions": "model"},
        {"dimensions": ["model"], "effective_from": 1},
        {"dimensions": ["model"], "effective_from": "yesterday"},
        {"dimensions": ["model"], "colour": "red"},
        {},
    ],
)
async def test_api_route_answers_a_bad_request_400(
    client: Client, api_key: str, body: dict[str, Any]
) -> None:
    r = await client.put(
        "/v1/meters/tokens/dimensions", json=body, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert r.status == 400, await r.text()


async def test_api_route_needs_a_key(client: Client) -> None:
    r = await client.put("/v1/meters/tokens/dimensions", json={"dimensions": []})
    assert r.status == 401
