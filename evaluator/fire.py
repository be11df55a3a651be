"""Evaluating one rule for one customer, and firing each crossed threshold exactly once.

Order of an evaluation, and why kill -9 anywhere (and several evaluators at once) give one event
per (rule, customer, period, threshold):
  1. Read the period, usage, amount, projection and limit (evaluator/reading.py). Nothing is
     written: a crash here loses nothing, the next touch or sweep reads again.
  2. One transaction: lock the rule (a rule deleted meanwhile is not evaluated: it never
     claims a limit after its delete commits), clear the hard limits of earlier periods (a new
     period re-arms the rule), or all of the customer's if the rule's hard limit is now off (each
     cleared row enqueues usage.limit_cleared), save the value for the states API, claim each
     crossed threshold (INSERT ... ON CONFLICT DO NOTHING on the firing's unique key) and, only
     for a claim that inserted, enqueue its webhook event; at the highest threshold of a hard-limit
     rule, claim the limit the same way and enqueue usage.limit_reached. The claim and its event
     commit together or not at all: a crash before the commit leaves neither (the next
     evaluation claims again), after it leaves both (the next evaluation's claim inserts nothing).
     A second evaluator's claim of the same key waits on the first's uncommitted row, then inserts
     nothing.
  3. After the commit, Redis: lift the cleared blocks, and assert the block of a standing limit of
     this period (meter/limits.py; both idempotent and scoped to the rule and the period). A
     crash between 2 and 3 leaves the block unasserted until the next evaluation of the customer
     (the next touch or sweep), which asserts it again from the alert_limits row; a lift lost the
     same way is applied again by the next sweep (`lift_cleared`, evaluator/worker.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from evaluator import queries
from evaluator.reading import Reading
from meter import limits
from meter.alerts import rules
from meter.connections import RedisClient
from meter.crashpoints import Faults
from meter.redis_keys import Keys
from meter.usage.store import ts
from meter.webhooks import events

# Crash-test points of this module (meter/crashpoints.py): before_commit, after_commit.


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    tenant: str
    customer: str | None
    meter: str | None  # None: the whole invoice (an `amount` rule)
    kind: str
    thresholds: tuple[Decimal, ...]
    hard_limit: bool
    filter: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, row: asyncpg.Record) -> Rule:
        return cls(
            row["id"],
            row["tenant"],
            row["customer"],
            row["meter"],
            row["kind"],
            tuple(row["thresholds"]),
            row["hard_limit"],
            tuple(sorted(orjson.loads(row["filter"]).items())),
        )


def value_of(rule: Rule, reading: Reading) -> Decimal | None:
    """What the rule compares with its thresholds; None when it cannot be known for this
    customer (no priced item for `amount` and `projected`, no limit for `percent_of_limit`)."""
    if rule.kind == rules.UNITS:
        return reading.units
    if rule.kind == rules.AMOUNT:
        return None if reading.amount is None else Decimal(reading.amount)
    if rule.kind == rules.PERCENT_OF_LIMIT:
        return None if reading.limit is None else rules.percent(reading.units, reading.limit)
    return reading.projected


def event_type(rule: Rule) -> str:
    """The webhook event a threshold of `rule` fires."""
    return events.PROJECTED_TO_EXCEED if rule.kind == rules.PROJECTED else events.THRESHOLD_CROSSED


@dataclass(frozen=True, slots=True)
class Outcome:
    fired: tuple[Decimal, ...] = ()  # thresholds newly fired by this evaluation
    reached: bool = False  # its hard limit newly reached
    cleared: int = 0  # limits of earlier periods cleared


def _unix(value: dt.datetime) -> int:
    return int(value.timestamp())


def _data(rule: Rule, reading: Reading, value: Decimal) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "rule": rule.id,
        "customer": reading.customer,
        "meter": rule.meter,
        "kind": rule.kind,
        "value": rules.number(value),
    }
    if rule.meter is not None:  # a rule on the whole invoice has no one meter's usage to name
        doc["usage"] = rules.number(reading.units)
    doc["period"] = {"start": reading.period.start, "end": reading.period.end}
    if rule.filter:
        doc["filter"] = dict(rule.filter)
    if rule.kind == rules.AMOUNT:
        doc["currency"] = reading.currency
    if rule.kind == rules.PERCENT_OF_LIMIT and reading.limit is not None:
        doc["limit"] = rules.number(reading.limit)
    return doc


async def evaluate(
    conn: asyncpg.Connection,
    redis: RedisClient,
    keys: Keys,
    rule: Rule,
    reading: Reading,
    faults: Faults | None = None,
) -> Outcome:
    """Steps 2 and 3 for a reading taken in step 1."""
    faults = faults or Faults()
    value = value_of(rule, reading)
    customer, period = reading.customer, reading.period
    start, end = ts(period.start), ts(period.end)
    crossed: Sequence[Decimal] = [] if value is None else rules.crossed(rule.thresholds, value)
    fired: list[Decimal] = []
    reached = False
    async with conn.transaction():
        # 2. One transaction: the rule locked as it stands (deleted meanwhile: nothing to do),
        #    earlier periods' limits cleared (all of them if its hard limit is off), the state
        #    saved, each crossed threshold claimed and, only when claimed here, its event enqueued.
        hard_limit = await conn.fetchval(queries.LOCK_RULE, rule.id)
        if hard_limit is None:
            return Outcome()
        cleared = [
            (c, "new_period")
            for c in await conn.fetch(
                queries.CLEAR_EARLIER_LIMITS, rule.id, list(reading.keys), start
            )
        ]
        if not hard_limit:
            cleared += [
                (c, "hard_limit_off")
                for c in await conn.fetch(
                    queries.CLEAR_STANDING_LIMITS, rule.id, list(reading.keys)
                )
            ]
        for c, reason in cleared:
            await enqueue_cleared(conn, rule.tenant, rule.id, c["customer"], c, reason)
        if value is not None:
            await conn.execute(
                queries.SAVE_STATE, rule.id, rule.tenant, customer, start, end, value
            )
        done = {r["threshold"] for r in await conn.fetch(queries.FIRED, rule.id, customer, start)}
        for threshold in crossed:
            if threshold in done:
                continue  # the common case: fired earlier this period, nothing to claim
            kind = event_type(rule)
            subject = rules.firing_subject(rule.id, customer, period.start, threshold)
            event_id = events.event_id(rule.tenant, kind, subject)
            claimed = await conn.fetchval(
                queries.CLAIM_FIRING,
                rule.id,
                rule.tenant,
                customer,
                start,
                end,
                threshold,
                value,
                event_id,
            )
            if claimed is not None:
                assert value is not None  # a threshold was crossed
                data = _data(rule, reading, value) | {"threshold": rules.number(threshold)}
                await events.enqueue(conn, rule.tenant, kind, subject, data)
                fired.append(threshold)
        if hard_limit and crossed and crossed[-1] == rule.thresholds[-1]:
            claimed = await conn.fetchval(
                queries.CLAIM_LIMIT,
                rule.id,
                rule.tenant,
                customer,
                list(reading.keys),
                rule.meter,
                start,
                end,
            )
            if claimed is not None:
                assert value is not None
                data = _data(rule, reading, value) | {
                    "threshold": rules.number(rule.thresholds[-1]),
                    "blocked_until": period.end,
                }
                subject = rules.limit_subject(rule.id, customer, period.start)
                await events.enqueue(conn, rule.tenant, events.LIMIT_REACHED, subject, data)
                reached = True
        standing = None
        if hard_limit:
            standing = await conn.fetchrow(queries.STANDING_LIMIT, rule.id, customer, start)
        faults.hit("before_commit")
    faults.hit("after_commit")
    # 3. Redis, after the commit (both calls idempotent, and each scoped to the rule and the
    #    period, so a late one never undoes another period's).
    for c, _ in cleared:
        await lift(redis, keys, rule.tenant, rule.id, c)
    if standing is not None:
        until_ms = _unix(standing["period_end"]) * 1000
        for key in standing["keys"]:
            await limits.block(
                redis, keys, rule.tenant, key, standing["meter"], rule_id=rule.id, until_ms=until_ms
            )
    return Outcome(tuple(fired), reached, len(cleared))


async def enqueue_cleared(
    conn: asyncpg.Connection,
    tenant: str,
    rule_id: str,
    customer: str,
    row: asyncpg.Record,
    reason: str,
) -> None:
    """usage.limit_cleared of an alert_limits row just cleared, in the clearing transaction."""
    start = _unix(row["period_start"])
    await events.enqueue(
        conn,
        tenant,
        events.LIMIT_CLEARED,
        rules.limit_subject(rule_id, customer, start),
        {
            "rule": rule_id,
            "customer": customer,
            "meter": row["meter"],
            "period": {"start": start, "end": _unix(row["period_end"])},
            "reason": reason,
        },
    )


async def lift(
    redis: RedisClient, keys: Keys, tenant: str, rule_id: str, row: asyncpg.Record
) -> None:
    """Lift a cleared alert_limits row's block of each key the customer's events may name it by
    (ingest sees the key an event names): only the rule's block of that period."""
    until_ms = _unix(row["period_end"]) * 1000
    for key in row["keys"]:
        await limits.clear(
            redis, keys, tenant, key, row["meter"], rule_id=rule_id, until_ms=until_ms
        )
