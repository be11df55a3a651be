"""Unauthenticated load stays off Postgres: keys not shaped like ours cost no query, an unknown
key asked again within seconds costs none, and ever-new random keys get at most the lookup
limiter's burst + rate of queries (then 429, no query). A valid key keeps working throughout.
And the billing routes that call Stripe are limited per tenant."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import asyncpg
import pytest

from meter.auth import KEY_PREFIX, KeyCache, new_key
from meter.config import Settings
from meter.errors import RateLimited
from tests.conftest import start_client


class CountingPool:
    """A real asyncpg pool whose key lookups are counted."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.queries = 0

    async def fetchval(self, query: str, *args: object) -> object:
        self.queries += 1
        return await self.pool.fetchval(query, *args)


async def test_many_random_keys_cost_a_bounded_number_of_lookups(
    database_url: str, api_key: str
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    assert pool is not None
    counting = CountingPool(pool)
    try:
        cache = KeyCache(counting, ttl_s=30.0, lookup_rate=10.0, lookup_burst=20)  # type: ignore[arg-type]
        # Not shaped like a key of ours: unknown, no query.
        for bad in ("x", KEY_PREFIX, api_key + "x", api_key[:-1] + "!", "Bearer " + api_key):
            assert (await cache.resolve(bad))[0] is None
        assert counting.queries == 0

        started = time.monotonic()

        async def attempt(key: str) -> str:
            try:
                tenant, _ = await cache.resolve(key)
            except RateLimited as exc:
                return "limited" if exc.retry_after >= 1 else "limited without Retry-After"
            return "unknown" if tenant is None else "known"

        answers = await asyncio.gather(*(attempt(new_key()) for _ in range(2000)))
        elapsed = time.monotonic() - started
        assert set(answers) <= {"unknown", "limited"}
        bound = 20 + 10 * elapsed + 1
        assert counting.queries == answers.count("unknown") <= bound, (counting.queries, bound)
        assert answers.count("limited") >= 2000 - bound

        # A key seen valid before the flood is still answered, and its refresh is never limited.
        queries = counting.queries
        valid = KeyCache(counting, ttl_s=0.0, lookup_rate=1.0, lookup_burst=1)  # type: ignore[arg-type]
        for _ in range(5):
            assert (await valid.resolve(api_key))[0] == "acme"
        assert counting.queries == queries + 5
        # The same unknown key again within the negative TTL costs nothing.
        unknown = new_key()
        again = KeyCache(counting, ttl_s=30.0, lookup_rate=1000.0, lookup_burst=1000)  # type: ignore[arg-type]
        for _ in range(50):
            assert (await again.resolve(unknown))[0] is None
        assert counting.queries == queries + 6
    finally:
        await pool.close()


async def test_a_flood_of_random_keys_gets_401_then_429_and_a_valid_key_still_works(
    settings: Settings, api_key: str
) -> None:
    client: Any = await start_client(
        settings.replace(api_key_lookup_rate=5.0, api_key_lookup_burst=10)
    )
    try:
        event = {"id": "e1", "customer": "c", "meter": "m"}
        ok = {"Authorization": f"Bearer {api_key}"}
        assert (await client.post("/v1/events", json=event, headers=ok)).status == 200
        started = time.monotonic()
        statuses = []
        for _ in range(100):
            bad = {"Authorization": f"Bearer {KEY_PREFIX}{secrets.token_urlsafe(32)}"}
            response = await client.post("/v1/events", json=event, headers=bad)
            statuses.append(response.status)
            if response.status == 429:
                assert int(response.headers["Retry-After"]) >= 1
                assert (await response.json())["error"]["type"] == "rate_limit_error"
        elapsed = time.monotonic() - started
        assert set(statuses) == {401, 429}
        # Each 401 of a new random key was one lookup; a 429 none.
        assert statuses.count(401) <= 10 + 5 * elapsed + 1
        response = await client.post("/v1/events", json=event | {"id": "e2"}, headers=ok)
        assert response.status == 200
    finally:
        await client.close()


@pytest.mark.parametrize("route", ["payment-method/setup-intent", "checkout-session"])
async def test_billing_routes_that_call_stripe_are_limited_per_tenant(
    settings: Settings, api_key: str, db: asyncpg.Connection, route: str
) -> None:
    from meter import auth

    other = await auth.create_key(db, name="other", tenant="globex")
    client: Any = await start_client(
        settings.replace(billing_rate_limit=0.01, billing_rate_burst=3)
    )
    try:
        statuses = []
        for _ in range(6):
            response = await client.post(
                f"/v1/customers/c1/{route}", json={}, headers={"Authorization": f"Bearer {api_key}"}
            )
            statuses.append(response.status)
        # Three get through to the handler (no Stripe here: 4xx/503 from it), then 429.
        assert 429 not in statuses[:3]
        assert statuses[3:] == [429, 429, 429]
        # Another tenant has its own budget; reads are not limited.
        response = await client.post(
            f"/v1/customers/c1/{route}", json={}, headers={"Authorization": f"Bearer {other}"}
        )
        assert response.status != 429
        response = await client.get(
            "/v1/customers/c1/subscription", headers={"Authorization": f"Bearer {api_key}"}
        )
        assert response.status != 429
    finally:
        await client.close()
