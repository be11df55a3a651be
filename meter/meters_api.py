"""`PUT` / `GET /v1/meters/{name}/dimensions` (API-key auth): a tenant's meter dimensions, the
same as `meter meters update` and `meter meters list` (docs/dimensions.md)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from meter import appkeys, dimensions, jsonwire, queries
from meter.auth import authenticate
from meter.bodies import json_object, read_body
from meter.connections import acquire
from meter.errors import InvalidRequest

ROUTE = "/v1/meters/{name}/dimensions"
_FIELDS = frozenset({"dimensions", "effective_from"})


def setup(app: web.Application) -> None:
    app.router.add_put(ROUTE, put_dimensions)
    app.router.add_get(ROUTE, get_dimensions)


def _meter_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not 0 < len(name) <= 100:
        raise InvalidRequest("a meter name is 1..100 characters", param="name")
    return name


def _effective_from(value: Any, now: dt.datetime) -> dt.datetime:
    if value is None:
        return now
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRequest(
            "`effective_from` is unix seconds or an ISO 8601 time", param="effective_from"
        )
    if isinstance(value, int):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidRequest(
                "`effective_from` is out of range", param="effective_from"
            ) from None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            "`effective_from` is not an ISO 8601 time", param="effective_from"
        ) from None


def _version(start: dt.datetime, keys: list[str]) -> dict[str, Any]:
    return {"effective_from": int(start.timestamp()), "dimensions": keys}


async def put_dimensions(request: web.Request) -> web.Response:
    """Set the keys from `effective_from` (default now) on; 200 with the meter's versions."""
    tenant = await authenticate(request)
    name = _meter_name(request)
    doc = json_object(await read_body(request))
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field `{unknown[0]}`", param=unknown[0])
    keys_doc = doc.get("dimensions")
    if not isinstance(keys_doc, list):
        raise InvalidRequest(
            "`dimensions` is required: a list of up to 3 property keys", param="dimensions"
        )
    keys = dimensions.parse_keys(keys_doc)
    now = dt.datetime.now(dt.UTC)
    when = dimensions.check_effective_from(_effective_from(doc.get("effective_from"), now), now)
    async with acquire(request.app[appkeys.PG]) as conn:
        await conn.execute(queries.SET_DIMENSIONS, tenant, name, when, list(keys))
        rows = await conn.fetch(queries.DIMENSION_VERSIONS, tenant, name)
    return _answer(name, rows, now)


async def get_dimensions(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    name = _meter_name(request)
    async with acquire(request.app[appkeys.PG]) as conn:
        rows = await conn.fetch(queries.DIMENSION_VERSIONS, tenant, name)
    return _answer(name, rows, dt.datetime.now(dt.UTC))


def _answer(name: str, rows: list[Any], now: dt.datetime) -> web.Response:
    current: list[str] = []
    for r in rows:
        if r["effective_from"] <= now:
            current = list(r["keys"])
    doc = {
        "object": "meter_dimensions",
        "meter": name,
        "dimensions": current,
        "versions": [_version(r["effective_from"], list(r["keys"])) for r in rows],
    }
    return web.Response(body=jsonwire.dumps(doc), content_type="application/json")
