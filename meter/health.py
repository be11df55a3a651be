"""Liveness and readiness. (Metrics are served on the metrics port: meter/metrics.py.)"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from meter import appkeys, queries

_CHECK_TIMEOUT_S = 2.0


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def _check(coro: asyncio.Future[object] | object) -> str:
    try:
        await asyncio.wait_for(coro, _CHECK_TIMEOUT_S)  # type: ignore[arg-type]
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


async def readyz(request: web.Request) -> web.Response:
    """Ready when Postgres and Redis both answer; 503 naming the one that does not."""
    app = request.app
    checks = {
        "postgres": await _check(app[appkeys.PG].fetchval(queries.PING)),
        "redis": await _check(app[appkeys.REDIS].ping()),
    }
    ok = all(v == "ok" for v in checks.values())
    return web.Response(
        status=200 if ok else 503,
        body=orjson.dumps({"status": "ok" if ok else "unavailable", "checks": checks}),
        content_type="application/json",
    )
