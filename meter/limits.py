"""Hard limits: a (tenant, customer, meter) blocked until its period ends refuses new usage.

An alert rule with `hard_limit` set, once its threshold is reached, calls `block`; when its
limit is cleared (a new period, the rule deleted or its hard limit turned off) the evaluator
calls `clear` for that period (evaluator/fire.py). The state is one Redis hash per tenant
(`Keys.limits`): field `customer\\x1fmeter`, value JSON {"rule": id, "until_ms": period end}. A
block past its `until_ms` is ignored: its period ended.

Ingest enforces it (`Blocks`, meter/ingest/endpoint.py): each serve process keeps a copy of the
blocks of every tenant it ingests for, refreshed from Redis in the background every
`REFRESH_S`, so the hot path costs a dict lookup per request, a set check of the batch's
customers while the tenant has a block, and a lookup per event only when one of them has one.
An event of a blocked pair whose timestamp lies before the block's end is answered `rejected`
with reason `over_limit`, naming the rule. Overshoot: docs/limits.md.

`customer` is the name events use for the customer: a block of our id does not refuse events
naming the Stripe `cus_` id, so a caller blocks each name its events may use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import NamedTuple

import orjson

from meter.connections import REDIS_ERRORS, RedisClient
from meter.redis_keys import BLOCK_LIMIT_SCRIPT, CLEAR_LIMIT_SCRIPT, Keys
from meter.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Between customer and meter in a field. Names may hold it (ingest refuses only NUL): a customer
# "a\x1fb" with meter "c" shares a field with customer "a" and meter "b\x1fc".
SEPARATOR = "\x1f"
REFRESH_S = 0.5
# A tenant this process has not ingested for in this long is dropped from the copy.
IDLE_S = 600.0
REASON = "over_limit"


class Block(NamedTuple):
    rule: str
    until_ms: int


class TenantBlocks(NamedTuple):
    """A tenant's blocks in force, by field, and every customer name a field may hold: ingest
    checks a batch's customers against it at C speed and looks events up only on a hit."""

    fields: dict[str, Block]
    customers: frozenset[str]

    @classmethod
    def of(cls, fields: dict[str, Block]) -> TenantBlocks:
        # Each prefix before a separator: a name holding one makes the split ambiguous.
        names = {f[:n] for f in fields for n, ch in enumerate(f) if ch == SEPARATOR}
        return cls(fields, frozenset(names))


NO_BLOCKS = TenantBlocks({}, frozenset())


def field(customer: str, meter: str) -> str:
    return f"{customer}{SEPARATOR}{meter}"


async def block(
    redis: RedisClient,
    keys: Keys,
    tenant: str,
    customer: str,
    meter: str,
    *,
    rule_id: str,
    until_ms: int,
) -> bool:
    """Refuse the customer's usage of `meter` from now until `until_ms` (unix ms, the end of the
    period whose limit was reached). Another rule's block of the pair is replaced; the same
    rule's block is never shortened (a late write from an earlier period's reading keeps the
    current one). True if written."""
    value = orjson.dumps({"rule": rule_id, "until_ms": int(until_ms)})
    written = await redis.eval(
        BLOCK_LIMIT_SCRIPT,
        1,
        keys.limits(tenant),
        field(customer, meter),
        str(rule_id),
        value,
        str(int(until_ms)),
    )
    return bool(written)


async def clear(
    redis: RedisClient,
    keys: Keys,
    tenant: str,
    customer: str,
    meter: str,
    *,
    rule_id: str,
    until_ms: int,
) -> bool:
    """Lift rule `rule_id`'s block of the pair for the period ending at `until_ms` (unix ms):
    another rule's block stays, and so does a block of the rule ending later (a later period's).
    Idempotent; True if lifted."""
    lifted = await redis.eval(
        CLEAR_LIMIT_SCRIPT,
        1,
        keys.limits(tenant),
        field(customer, meter),
        str(rule_id),
        str(int(until_ms)),
    )
    return bool(lifted)


def parse(raw: Mapping[bytes | str, bytes | str], now_ms: int) -> dict[str, Block]:
    """A tenant's hash as blocks still in force at `now_ms`, by field; a malformed entry is
    skipped."""
    found: dict[str, Block] = {}
    for name, value in raw.items():
        text = name.decode() if isinstance(name, bytes) else name
        try:
            doc = orjson.loads(value)
            entry = Block(str(doc["rule"]), int(doc["until_ms"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("limits: malformed block skipped", extra={"field": text})
            continue
        if entry.until_ms > now_ms:
            found[text] = entry
    return found


async def blocked(redis: RedisClient, keys: Keys, tenant: str) -> dict[str, Block]:
    """The tenant's blocks in force now, read from Redis."""
    raw = await redis.hgetall(keys.limits(tenant))
    return parse(raw, int(time.time() * 1000))


def refusal(entry: Block, customer: str, meter: str) -> str:
    """The message of an `over_limit` item."""
    return (
        f"customer {customer!r} reached the hard limit of alert rule {entry.rule!r} on meter "
        f"{meter!r}: its usage is refused until the period ends (until_ms {entry.until_ms})"
    )


class Blocks:
    """This process's copy of the blocks of the tenants it ingests for (see the module)."""

    def __init__(self, redis: RedisClient, keys: Keys, *, refresh_s: float = REFRESH_S) -> None:
        self._redis = redis
        self._keys = keys
        self._refresh_s = refresh_s
        self._by_tenant: dict[str, TenantBlocks] = {}
        self._asked: dict[str, float] = {}  # tenant → monotonic time of its last request

    def get(self, tenant: str) -> TenantBlocks | None:
        """The tenant's blocks as last read, or None before the first read."""
        found = self._by_tenant.get(tenant)
        if found is not None:
            self._asked[tenant] = time.monotonic()
        return found

    async def load(self, tenant: str) -> TenantBlocks:
        """The first read of a tenant, awaited by its first request: kept fresh from then on.
        Redis unreachable: no blocks (ingest answers 503 at its commit anyway)."""
        try:
            found = TenantBlocks.of(await blocked(self._redis, self._keys, tenant))
        except REDIS_ERRORS as exc:
            log.warning("limits: blocks unavailable", extra={"error": str(exc)})
            return NO_BLOCKS
        self._by_tenant[tenant] = found
        self._asked[tenant] = time.monotonic()
        return found

    async def refresh(self) -> None:
        """Read every kept tenant's blocks again, in one pipeline; forget idle tenants."""
        now = time.monotonic()
        for tenant in [t for t, at in self._asked.items() if now - at > IDLE_S]:
            del self._asked[tenant]
            self._by_tenant.pop(tenant, None)
        tenants = list(self._by_tenant)
        if not tenants:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant in tenants:
                pipe.hgetall(self._keys.limits(tenant))
            answers = await pipe.execute()
        now_ms = int(time.time() * 1000)
        for tenant, raw in zip(tenants, answers, strict=True):
            if tenant in self._by_tenant:  # not forgotten meanwhile
                self._by_tenant[tenant] = TenantBlocks.of(parse(raw, now_ms))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except REDIS_ERRORS as exc:
                # The last copy stays in force until Redis answers again.
                log.warning("limits: refresh failed", extra={"error": str(exc)})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Blocks]:
        task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            await cancel_and_wait(task)
