"""Reading and writing alert rules (the only writer of alert_rules), for the API and the CLI."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from typing import Any

import asyncpg
import orjson

from meter import limits
from meter.alerts import queries, rules
from meter.billing.errors import NotFound
from meter.connections import REDIS_ERRORS, RedisClient
from meter.errors import InvalidRequest
from meter.redis_keys import Keys

log = logging.getLogger(__name__)

Doc = dict[str, Any]


def _unix(value: dt.datetime) -> int:
    return int(value.timestamp())


def rule_doc(row: asyncpg.Record) -> Doc:
    return {
        "object": "alert_rule",
        "id": row["id"],
        "customer": row["customer"],
        "meter": row["meter"],
        "filter": orjson.loads(row["filter"]),
        "kind": row["kind"],
        "thresholds": [rules.number(t) for t in row["thresholds"]],
        "hard_limit": row["hard_limit"],
        "created": _unix(row["created_at"]),
        "updated": _unix(row["updated_at"]),
    }


def _not_found(rule_id: str) -> NotFound:
    # Another tenant's rule is answered the same: its existence is not revealed.
    return NotFound(f"no alert rule {rule_id!r}", param="id")


async def create(conn: asyncpg.Connection, tenant: str, spec: rules.RuleSpec) -> Doc:
    if await conn.fetchval(queries.COUNT_RULES, tenant) >= rules.MAX_RULES_PER_TENANT:
        raise InvalidRequest(
            f"a tenant has at most {rules.MAX_RULES_PER_TENANT} alert rules; delete one first"
        )
    row = await conn.fetchrow(
        queries.INSERT_RULE,
        f"alr_{secrets.token_hex(12)}",
        tenant,
        spec.customer,
        spec.meter,
        spec.kind,
        list(spec.thresholds),
        spec.hard_limit,
        orjson.dumps(dict(spec.filter)).decode(),
    )
    assert row is not None
    return rule_doc(row)


async def list_rules(
    conn: asyncpg.Connection, tenant: str, *, after: str | None = None, limit: int | None = None
) -> list[Doc]:
    """The tenant's rules, oldest first: after rule `after`, at most `limit` (None: all)."""
    return [rule_doc(r) for r in await conn.fetch(queries.LIST_RULES, tenant, after, limit)]


async def get(conn: asyncpg.Connection, tenant: str, rule_id: str) -> Doc:
    row = await conn.fetchrow(queries.GET_RULE, tenant, rule_id)
    if row is None:
        raise _not_found(rule_id)
    return rule_doc(row)


async def update(conn: asyncpg.Connection, tenant: str, rule_id: str, doc: Doc) -> Doc:
    async with conn.transaction():
        row = await conn.fetchrow(queries.GET_RULE_FOR_UPDATE, tenant, rule_id)
        if row is None:
            raise _not_found(rule_id)
        new, hard = rules.parse_update(doc, row["kind"], row["thresholds"], row["hard_limit"])
        if hard and row["meter"] is None:
            raise InvalidRequest(
                "a hard limit blocks one meter: a rule on the whole invoice cannot have one",
                param="hard_limit",
            )
        if hard and row["filter"] != "{}":
            raise InvalidRequest(
                "a hard limit blocks the whole meter: it goes with rules without a `filter`",
                param="hard_limit",
            )
        updated = await conn.fetchrow(queries.UPDATE_RULE, tenant, rule_id, list(new), hard)
    assert updated is not None
    return rule_doc(updated)


async def delete(conn: asyncpg.Connection, tenant: str, rule_id: str) -> list[asyncpg.Record]:
    """Delete the rule; returns the limits it held (keys, meter, period_end) for the caller's
    prompt lift (`lift`). The evaluator owns the rest: its next sweep clears those limits,
    enqueues their usage.limit_cleared and lifts them again, so a lift lost here (a crash, Redis
    unavailable, an evaluator's late block) holds within a sweep."""
    async with conn.transaction():
        held = await conn.fetch(queries.STANDING_LIMITS_OF_RULE, tenant, rule_id)
        if await conn.fetchval(queries.DELETE_RULE, tenant, rule_id) is None:
            raise _not_found(rule_id)
    return held


async def lift(
    redis: RedisClient, keys: Keys, tenant: str, rule_id: str, held: list[asyncpg.Record]
) -> None:
    """Lift a deleted rule's blocks (only its own, of their period) at once; best effort, logged:
    the evaluator's sweep lifts them anyway."""
    try:
        for r in held:
            until_ms = _unix(r["period_end"]) * 1000
            for key in r["keys"]:
                await limits.clear(
                    redis, keys, tenant, key, r["meter"], rule_id=rule_id, until_ms=until_ms
                )
    except REDIS_ERRORS as exc:
        log.warning(
            "alert rule deleted; its block is lifted by the next sweep", extra={"error": str(exc)}
        )


def _state_doc(r: asyncpg.Record) -> Doc:
    return {
        "customer": r["customer"],
        "period": {"start": _unix(r["period_start"]), "end": _unix(r["period_end"])},
        "value": rules.number(r["value"]),
        "evaluated_at": _unix(r["evaluated_at"]),
        "crossed": [
            {"threshold": rules.number(t), "at": _unix(at)}
            for t, at in zip(r["thresholds"], r["fired_at"], strict=True)
        ],
        "blocked": r["blocked"],
    }


async def states(
    conn: asyncpg.Connection, tenant: str, rule_id: str, customer: str | None, limit: int
) -> Doc:
    await get(conn, tenant, rule_id)  # 404 for a rule of another tenant
    rows = await conn.fetch(queries.STATES, tenant, rule_id, customer, limit)
    return {"object": "list", "rule": rule_id, "data": [_state_doc(r) for r in rows]}
