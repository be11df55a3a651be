"""A key's tenant is always named on purpose and is a valid tenant name, and names holding `:`
(stored before names were checked) cannot make two tenants' events one."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from meter import auth, queries
from meter.config import Settings
from tests.integration.security.test_api_keys import cli


async def test_a_key_without_tenant_is_refused_with_a_clear_error(
    settings: Settings, db: asyncpg.Connection
) -> None:
    code, out, err = await cli(settings, "create", "ci")
    assert code == 2
    assert "--tenant" in err
    assert out == ""
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_a_tenant_name_outside_the_charset_is_refused(
    settings: Settings, db: asyncpg.Connection
) -> None:
    for bad in ("acme:x", "", "a b", "-lead", "x" * 65, "caf\u00e9"):
        code, out, err = await cli(settings, "create", "ci", f"--tenant={bad}")
        assert code == 2, (bad, err)
        assert "not a tenant name" in err, err
        assert out == ""
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_the_billing_tenant_is_given_only_when_named_and_the_cli_says_what_it_owns(
    settings: Settings, db: asyncpg.Connection
) -> None:
    code, out, err = await cli(settings, "create", "ops", "--tenant", "default")
    assert code == 0
    assert out.startswith("mk_live_")
    assert "billing tenant" in err
    code, _, err = await cli(settings, "create", "ci", "--tenant", "acme")
    assert code == 0
    assert "billing tenant" not in err
    rows = await db.fetch("SELECT name, tenant FROM api_keys ORDER BY id")
    assert [tuple(r) for r in rows] == [("ops", "default"), ("ci", "acme")]


async def post(client: Any, key: str, event_id: str) -> dict[str, Any]:
    response = await client.post(
        "/v1/events",
        data=orjson.dumps({"id": event_id, "customer": "c", "meter": "m"}),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status == 200
    doc: dict[str, Any] = await response.json()
    return doc


async def test_a_tenant_holding_a_colon_does_not_share_dedupe_keys(
    client: Any, db: asyncpg.Connection, settings: Settings
) -> None:
    # As a key stored before tenant names were checked: straight into the table.
    acme = await auth.create_key(db, name="a", tenant="acme")
    legacy = auth.new_key()
    await db.execute(queries.INSERT_API_KEY, "acme:x", "b", auth.hash_key(legacy), legacy[:12])
    first = await post(client, acme, "x:inv-42")
    second = await post(client, legacy, "inv-42")
    assert first["results"][0]["status"] == "accepted"
    assert second["results"][0]["status"] == "accepted", second
