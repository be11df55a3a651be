"""`/v1/alert_rules` (API-key auth): a tenant's usage alert rules and their states, the same as
`meter alerts ...` (docs/alerts.md). Another tenant's rule is a 404, never a 403."""

from __future__ import annotations

from aiohttp import web

from meter import appkeys, jsonwire
from meter.alerts import rules, store
from meter.auth import authenticate
from meter.bodies import json_object, read_body
from meter.connections import acquire
from meter.errors import InvalidRequest
from meter.paging import limit_of

RULES = "/v1/alert_rules"
RULE = RULES + "/{id}"
MAX_STATES = 1000


def setup(app: web.Application) -> None:
    app.router.add_post(RULES, create_rule)
    app.router.add_get(RULES, list_rules)
    app.router.add_get(RULE, get_rule)
    app.router.add_post(RULE, update_rule)
    app.router.add_delete(RULE, delete_rule)
    app.router.add_get(RULE + "/states", rule_states)


def _rule_id(request: web.Request) -> str:
    rule_id = request.match_info["id"]
    if not 0 < len(rule_id) <= rules.MAX_ID_LENGTH:
        raise InvalidRequest(f"a rule id is 1..{rules.MAX_ID_LENGTH} characters", param="id")
    return rule_id


async def create_rule(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    spec = rules.parse_create(json_object(await read_body(request)))
    async with acquire(request.app[appkeys.PG]) as conn:
        doc = await store.create(conn, tenant, spec)
    return jsonwire.response(doc)


async def list_rules(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    limit = limit_of(request, 10)
    after = request.query.get("starting_after")
    async with acquire(request.app[appkeys.PG]) as conn:
        rows = await store.list_rules(conn, tenant, after=after, limit=limit + 1)
    page = {"object": "list", "data": rows[:limit], "has_more": len(rows) > limit}
    return jsonwire.response(page)


async def get_rule(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    async with acquire(request.app[appkeys.PG]) as conn:
        doc = await store.get(conn, tenant, _rule_id(request))
    return jsonwire.response(doc)


async def update_rule(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    rule_id = _rule_id(request)
    body = json_object(await read_body(request))
    async with acquire(request.app[appkeys.PG]) as conn:
        doc = await store.update(conn, tenant, rule_id, body)
    return jsonwire.response(doc)


async def delete_rule(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    rule_id = _rule_id(request)
    async with acquire(request.app[appkeys.PG]) as conn:
        held = await store.delete(conn, tenant, rule_id)
    app = request.app
    await store.lift(app[appkeys.REDIS], app[appkeys.KEYS], tenant, rule_id, held)
    return jsonwire.response({"object": "alert_rule", "id": rule_id, "deleted": True})


async def rule_states(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    rule_id = _rule_id(request)
    customer = request.query.get("customer")
    limit = limit_of(request, 100, MAX_STATES)
    async with acquire(request.app[appkeys.PG]) as conn:
        doc = await store.states(conn, tenant, rule_id, customer, limit)
    return jsonwire.response(doc)
