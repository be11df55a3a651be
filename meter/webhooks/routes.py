"""`/v1/webhook_endpoints` (API-key auth): a tenant's webhook endpoints, their secrets'
rotation, their delivery log and manual redelivery (docs/webhooks.md). An endpoint or delivery
of another tenant is not found (404), never forbidden: its existence is not revealed."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from aiohttp import web

from meter import appkeys, jsonwire
from meter.auth import authenticate
from meter.bodies import json_object, read_body
from meter.connections import acquire
from meter.errors import InvalidRequest, MeteringError
from meter.paging import limit_of
from meter.webhooks import endpoints, queries, store

ENDPOINTS: Final = "/v1/webhook_endpoints"
ENDPOINT: Final = ENDPOINTS + "/{id}"
ROTATE: Final = ENDPOINT + "/rotate_secret"
DELIVERIES: Final = ENDPOINT + "/deliveries"
REDELIVER: Final = DELIVERIES + "/{delivery}/redeliver"
DELIVERY_STATUSES: Final = ("pending", "succeeded", "failed")
_CREATE_FIELDS = frozenset({"url", "enabled_events"})
_UPDATE_FIELDS = frozenset({"url", "enabled_events", "disabled"})
_ROTATE_FIELDS = frozenset({"expires_in"})


class NotFound(MeteringError):
    status = 404
    type = "not_found"


def setup(app: web.Application) -> None:
    app.router.add_post(ENDPOINTS, create_endpoint)
    app.router.add_get(ENDPOINTS, list_endpoints)
    app.router.add_get(ENDPOINT, get_endpoint)
    app.router.add_post(ENDPOINT, update_endpoint)
    app.router.add_delete(ENDPOINT, delete_endpoint)
    app.router.add_post(ROTATE, rotate_secret)
    app.router.add_get(DELIVERIES, list_deliveries)
    app.router.add_post(REDELIVER, redeliver)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _missing(endpoint_id: str) -> NotFound:
    return NotFound(f"no webhook endpoint {endpoint_id[:80]!r}", param="id")


async def _body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    raw = await read_body(request)
    if optional and not raw.strip():
        return {}
    return json_object(raw)


async def create_endpoint(request: web.Request) -> web.Response:
    """A new endpoint; the answer holds its signing secret, shown this once."""
    tenant = await authenticate(request)
    doc = await _body(request)
    endpoints.unknown_fields(doc, _CREATE_FIELDS)
    private = request.app[appkeys.SETTINGS].notifier_private_urls
    url = endpoints.check_url(doc.get("url"), allow_private=private)
    types = endpoints.check_event_types(doc.get("enabled_events"))
    async with acquire(request.app[appkeys.PG]) as conn:
        row, secret = await store.create(conn, tenant, url, types, _now())
    return jsonwire.response({**store.endpoint_doc(row), "secret": secret})


async def list_endpoints(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    limit = limit_of(request, 10)
    after = request.query.get("starting_after")
    async with acquire(request.app[appkeys.PG]) as conn:
        rows = await conn.fetch(queries.LIST_ENDPOINTS, tenant, after, limit + 1)
    data = [store.endpoint_doc(r) for r in rows[:limit]]
    return jsonwire.response({"object": "list", "data": data, "has_more": len(rows) > limit})


async def get_endpoint(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    endpoint_id = request.match_info["id"]
    async with acquire(request.app[appkeys.PG]) as conn:
        row = await conn.fetchrow(queries.GET_ENDPOINT, tenant, endpoint_id)
    if row is None:
        raise _missing(endpoint_id)
    return jsonwire.response(store.endpoint_doc(row))


async def update_endpoint(request: web.Request) -> web.Response:
    """Change the URL, the event types, or disable/enable (`disabled`); absent fields stay."""
    tenant = await authenticate(request)
    endpoint_id = request.match_info["id"]
    doc = await _body(request)
    endpoints.unknown_fields(doc, _UPDATE_FIELDS)
    private = request.app[appkeys.SETTINGS].notifier_private_urls
    url = endpoints.check_url(doc["url"], allow_private=private) if "url" in doc else None
    types = endpoints.check_event_types(doc["enabled_events"]) if "enabled_events" in doc else None
    disabled = endpoints.check_flag(doc["disabled"], "disabled") if "disabled" in doc else None
    async with acquire(request.app[appkeys.PG]) as conn:
        row = await store.update(
            conn,
            tenant,
            endpoint_id,
            url=url,
            types=types,
            disabled=disabled,
            reason="disabled through the API" if disabled else None,
        )
    if row is None:
        raise _missing(endpoint_id)
    return jsonwire.response(store.endpoint_doc(row))


async def delete_endpoint(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    endpoint_id = request.match_info["id"]
    async with acquire(request.app[appkeys.PG]) as conn:
        deleted = await store.delete(conn, tenant, endpoint_id)
    if not deleted:
        raise _missing(endpoint_id)
    return jsonwire.response({"object": "webhook_endpoint", "id": endpoint_id, "deleted": True})


async def rotate_secret(request: web.Request) -> web.Response:
    """A new signing secret (shown this once); the previous one keeps signing for
    `expires_in` seconds (default 24 h), so receivers can switch without missing a delivery."""
    tenant = await authenticate(request)
    endpoint_id = request.match_info["id"]
    doc = await _body(request, optional=True)
    endpoints.unknown_fields(doc, _ROTATE_FIELDS)
    overlap = endpoints.check_overlap(doc.get("expires_in"))
    async with acquire(request.app[appkeys.PG]) as conn:
        rotated = await store.rotate(conn, tenant, endpoint_id, overlap, _now())
    if rotated is None:
        raise _missing(endpoint_id)
    return jsonwire.response(
        {
            **store.endpoint_doc(rotated.endpoint),
            "secret": rotated.secret,
            "previous_secret_expires": int(rotated.previous_expires.timestamp()),
        }
    )


async def list_deliveries(request: web.Request) -> web.Response:
    """The endpoint's deliveries, newest first, each with its attempts."""
    tenant = await authenticate(request)
    endpoint_id = request.match_info["id"]
    limit = limit_of(request, 20)
    status = request.query.get("status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise InvalidRequest(f"`status` is one of {', '.join(DELIVERY_STATUSES)}", param="status")
    async with acquire(request.app[appkeys.PG]) as conn:
        if await conn.fetchrow(queries.GET_ENDPOINT, tenant, endpoint_id) is None:
            raise _missing(endpoint_id)
        rows = await store.deliveries(conn, tenant, endpoint_id, limit=limit + 1, status=status)
    data = [store.delivery_doc(r) for r in rows[:limit]]
    return jsonwire.response({"object": "list", "data": data, "has_more": len(rows) > limit})


async def redeliver(request: web.Request) -> web.Response:
    """Send a delivery again (whatever its status), with a fresh retry window."""
    tenant = await authenticate(request)
    endpoint_id = request.match_info["id"]
    delivery_id = request.match_info["delivery"]
    async with acquire(request.app[appkeys.PG]) as conn:
        if not await store.redeliver(conn, tenant, endpoint_id, delivery_id, _now()):
            raise NotFound(f"no webhook delivery {delivery_id[:80]!r}", param="delivery")
        rows = await store.deliveries(conn, tenant, endpoint_id, limit=1, delivery_id=delivery_id)
    return jsonwire.response(store.delivery_doc(rows[0]))
