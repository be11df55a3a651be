"""The aiohttp application: `create_app(settings)` is the only way to build one."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import orjson
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from meter import appkeys, meters_api
from meter.alerts import routes as alert_routes
from meter.auth import KeyCache
from meter.billing import routes as billing_routes
from meter.config import Settings
from meter.connections import PooledConnection, acquire, close_pool, redis_client
from meter.errors import InvalidRequest, MeteringError, Unavailable
from meter.health import healthz, readyz
from meter.ingest.committer import Committer
from meter.ingest.endpoint import post_events
from meter.ingest.strict import KnownNames
from meter.ingest.validation import Limits
from meter.limits import Blocks
from meter.metrics import Metrics
from meter.migrate import require_schema
from meter.openapi import openapi_json
from meter.ratelimit import RateLimiter
from meter.redis_keys import Keys
from meter.usage import routes as usage_routes
from meter.webhooks import routes as webhook_routes
from meter.wiring import usage_upkeep

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(status: int, type_: str, message: str, param: str | None = None) -> web.Response:
    doc = {"error": {"type": type_, "message": message, "param": param}}
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as `{"error": {...}}`; a 500 only for our own failures."""
    try:
        raw = request.raw_path  # one middleware, not two: each layer costs every request
        if "%00" in raw or "\x00" in raw:
            refuse_nul(request)
        return await handler(request)
    except Unavailable as exc:
        response = error_body(exc.status, exc.type, exc.message)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except MeteringError as exc:
        return error_body(exc.status, exc.type, exc.message, exc.param)
    except web.RequestPayloadError as exc:
        # The body could not be read as sent (broken chunked transfer): the client's mistake.
        # The rest of the body is dropped with the connection, so that aiohttp does not read it
        # again after the answer (and log the same error as unhandled).
        request.content.feed_eof()
        cause = getattr(exc.__cause__, "message", None) or "malformed body"
        response = error_body(
            400,
            "invalid_request_error",
            f"the body could not be read ({cause})",
        )
        response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status == 413:
            message = (
                f"the body is larger than {request.app[appkeys.SETTINGS].max_body_bytes} bytes"
            )
        else:
            message = exc.reason if exc.text is None else exc.text
        kind = "invalid_request_error" if exc.status < 500 else "api_error"
        response = error_body(exc.status, kind, message)
        for name in ("Allow", "Retry-After"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return error_body(500, "api_error", "internal error; nothing was written")


def refuse_nul(request: web.Request) -> None:
    """A path id or query parameter holding U+0000 is refused here, once for every route:
    Postgres text cannot hold it, so it would fail as a database error deep in a handler. (Only
    a raw path or query holding `%00` or a NUL can decode to one.)"""
    for source in (request.match_info, request.query):
        for name, value in source.items():
            if "\x00" in name or "\x00" in value:
                raise InvalidRequest(f"`{name}` must not contain U+0000 (NUL)", param=name)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=1, max_size=8, connection_class=PooledConnection
    )
    assert pool is not None
    async with acquire(pool) as conn:
        await require_schema(conn)
    # No client-side retries: a command that timed out may have run, and re-sending it would
    # answer a first delivery `duplicate`. Failing fast gives the client a 503 instead, and its
    # retry with the same ids gets the documented answers (`duplicate` for what landed).
    redis = redis_client(
        settings.redis_url,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
        max_connections=64,
        retry=Retry(NoBackoff(), 0),
    )
    committer = Committer(
        redis,
        app[appkeys.KEYS],
        shards=settings.shards,
        max_events=settings.commit_max_events,
        high_water=settings.stream_high_water,
        metrics=app[appkeys.METRICS],
        dedupe_ttl_s=max(1, math.ceil(settings.dedupe_window_s)),
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_s=settings.redis_wait_timeout_s,
    )
    app[appkeys.PG] = pool
    app[appkeys.REDIS] = redis
    app[appkeys.KEY_CACHE] = KeyCache(
        pool,
        ttl_s=settings.api_key_cache_ttl_s,
        lookup_rate=settings.api_key_lookup_rate,
        lookup_burst=settings.api_key_lookup_burst,
    )
    app[appkeys.COMMITTER] = committer
    known_names = app[appkeys.KNOWN_NAMES] = KnownNames(pool)
    await committer.start()
    log.info("meter serving", extra={"shards": settings.shards})
    try:
        async with (
            Blocks(redis, app[appkeys.KEYS]).running() as blocks,
            app[appkeys.METRICS].folding(),
        ):
            app[appkeys.HARD_LIMITS] = blocks
            yield
    finally:
        await committer.stop()
        await known_names.close()
        await redis.aclose()
        await close_pool(pool, "api")


def create_app(settings: Settings) -> web.Application:
    """The ingest service (and, as later parts land, the rest of the HTTP API)."""
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=settings.max_body_bytes,
        # Bodies are decoded by meter/bodies.py, whose errors are the client's, in our shape.
        handler_args={"auto_decompress": False},
    )
    app[appkeys.SETTINGS] = settings
    app[appkeys.METRICS] = Metrics(settings.metrics_dir)
    app[appkeys.KEYS] = Keys(settings.redis_prefix)
    app[appkeys.LIMITS] = Limits.from_settings(settings)
    app[appkeys.RATE_LIMITER] = (
        RateLimiter(settings.ingest_rate_limit, settings.ingest_rate_burst)
        if settings.ingest_rate_limit > 0
        else None
    )
    app[appkeys.BILLING_RATE_LIMITER] = (
        RateLimiter(settings.billing_rate_limit, settings.billing_rate_burst)
        if settings.billing_rate_limit > 0
        else None
    )
    app.cleanup_ctx.append(_resources)
    app.router.add_post("/v1/events", post_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi_json)
    billing_routes.setup(
        app, usage_upkeep(settings.dimension_combinations)
    )  # after _resources: billing shares its pool
    usage_routes.setup(app)
    meters_api.setup(app)
    webhook_routes.setup(app)
    alert_routes.setup(app)
    return app
