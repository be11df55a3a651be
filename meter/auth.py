"""Ingest API keys: created once and shown once, stored as sha256, resolved to a tenant.

Lookups are by the key's sha256, so timing reveals at most something about a hash, never about
the key; the stored hash is then compared in constant time anyway.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import math
import re
import secrets
import time
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from meter import queries
from meter.errors import AuthenticationError, RateLimited
from meter.names import check_tenant
from meter.ratelimit import RateLimiter

KEY_PREFIX = "mk_live_"
# Unknown keys are remembered briefly (by digest, at most _MAX_NEGATIVE of them), so the same bad
# key again costs no query; the lookup limiter bounds the queries of ever-new bad keys.
_NEGATIVE_TTL_S = 5.0
_MAX_NEGATIVE = 10_000
# The shape `new_key` makes: anything else is unknown without asking Postgres.
_KEY_SHAPE = re.compile(r"mk_live_[A-Za-z0-9_-]{43}")


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    """A fresh secret API key: `mk_live_` + 43 url-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_key(conn: asyncpg.Connection, *, name: str, tenant: str) -> str:
    """Store a new key for `tenant` and return it; this is the only time it is seen.
    InvalidRequest when `tenant` is not a tenant name (meter/names.py)."""
    check_tenant(tenant)
    key = new_key()
    await conn.execute(queries.INSERT_API_KEY, tenant, name, hash_key(key), key[:12])
    return key


@dataclass(slots=True)
class _Entry:
    tenant: str | None
    key_hash: bytes
    expires: float


class KeyCache:
    """Resolves a presented key to its tenant, caching answers for `ttl_s`.

    A revoked key stops working within `ttl_s` (plus one lookup's round trip) on every server.

    When an entry expires, every request of that key in flight misses it at once; they share
    one lookup (`_lookup`) instead of sending one each, which under load took every pooled
    connection every `ttl_s` and made other requests queue for one.

    Unauthenticated load stays off Postgres: a key not shaped like ours is unknown without a
    query; an unknown key is remembered (negative entry) for a few seconds; and lookups of keys
    this process has not seen valid — ever-new random keys — go through a token bucket of
    `lookup_rate`/s (burst `lookup_burst`): past it the request gets 429 + Retry-After and no
    query. Refreshing a key known valid is never limited.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        ttl_s: float,
        lookup_rate: float = 0.0,
        lookup_burst: int = 1,
    ) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._entries: dict[bytes, _Entry] = {}
        self._lookups: dict[bytes, asyncio.Task[str | None]] = {}
        self._limiter = RateLimiter(lookup_rate, lookup_burst) if lookup_rate > 0 else None

    async def tenant_for(self, key: str) -> str | None:
        """The key's tenant, or None when the key is unknown or revoked."""
        return (await self.resolve(key))[0]

    async def resolve(self, key: str) -> tuple[str | None, bytes]:
        """The key's tenant (None when unknown or revoked) and its sha256, which identifies
        the key (per-key rate limits) without keeping the key itself."""
        digest = hash_key(key)
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is None or entry.expires < now:
            if _KEY_SHAPE.fullmatch(key) is None:
                return None, digest
            if (entry is None or entry.tenant is None) and digest not in self._lookups:
                self._check_lookup_rate(now)
            tenant = await self._lookup(digest)
            ttl = self._ttl_s if tenant is not None else _NEGATIVE_TTL_S
            if tenant is None and len(self._entries) >= _MAX_NEGATIVE:
                self._evict(now)
            entry = self._entries[digest] = _Entry(tenant, digest, now + ttl)
        if entry.tenant is None or not hmac.compare_digest(entry.key_hash, digest):
            return None, digest
        return entry.tenant, digest

    def _check_lookup_rate(self, now: float) -> None:
        if self._limiter is None:
            return
        wait = self._limiter.acquire(None, now)
        if wait:
            raise RateLimited(
                "too many requests with unknown API keys; retry later",
                retry_after=max(1, math.ceil(wait)),
            )

    async def _lookup(self, digest: bytes) -> str | None:
        """The tenant of a key hash from Postgres; concurrent callers share one query. (Joining
        a query sent before the call is within the contract: a key works up to `ttl_s` after
        its revocation anyway.)"""
        task = self._lookups.get(digest)
        if task is None:
            query = self._pool.fetchval(queries.TENANT_FOR_KEY_HASH, digest)
            task = self._lookups[digest] = asyncio.ensure_future(query)
            task.add_done_callback(functools.partial(self._looked_up, digest))
        # Shielded: one caller going away must not cancel the others' query.
        return await asyncio.shield(task)

    def _looked_up(self, digest: bytes, task: asyncio.Task[str | None]) -> None:
        self._lookups.pop(digest, None)
        if not task.cancelled():
            task.exception()  # marked as seen: every caller may have gone away

    def _evict(self, now: float) -> None:
        expired = [d for d, e in self._entries.items() if e.expires < now or e.tenant is None]
        for digest in expired:
            del self._entries[digest]


_BEARER = "Bearer "
# The app's key cache; meter/appkeys.py names it with the others (defined here, where its class
# is, so that authenticating needs no import at each request).
KEY_CACHE = web.AppKey("key_cache", KeyCache)


async def authenticate_key(request: web.Request) -> tuple[str, bytes]:
    """The tenant of the request's API key and the key's sha256, or AuthenticationError."""
    header = request.headers.get("Authorization", "")
    if not header.startswith(_BEARER):
        raise AuthenticationError("missing `Authorization: Bearer <api key>` header")
    tenant, digest = await request.app[KEY_CACHE].resolve(header[len(_BEARER) :].strip())
    if tenant is None:
        raise AuthenticationError("invalid or revoked API key")
    return tenant, digest


async def authenticate(request: web.Request) -> str:
    """The tenant of the request's API key, or AuthenticationError."""
    return (await authenticate_key(request))[0]
