"""`/v1/webhook_endpoints`: the secret shown once, rotation, the delivery log and redelivery,
tenant isolation (404, never 403) and per-field 400s."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from meter import auth
from meter.config import Settings
from meter.webhooks import events
from tests.conftest import start_client

Client = TestClient[object, object]
URL = "https://hooks.example.com/meter"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def call(
    client: Client, method: str, path: str, key: str, body: Any = None, status: int = 200
) -> dict[str, Any]:
    data = None if body is None else orjson.dumps(body)
    response = await client.request(method, path, data=data, headers=bearer(key))
    doc: dict[str, Any] = orjson.loads(await response.read())
    assert response.status == status, doc
    return doc


async def create(client: Client, key: str, **fields: Any) -> dict[str, Any]:
    body = {"url": URL, "enabled_events": [events.LIMIT_REACHED], **fields}
    return await call(client, "POST", "/v1/webhook_endpoints", key, body)


async def test_create_shows_the_secret_once(client: Client, api_key: str) -> None:
    made = await create(client, api_key)
    assert made["secret"].startswith("whsec_")
    assert made["status"] == "enabled"
    assert made["enabled_events"] == [events.LIMIT_REACHED]
    got = await call(client, "GET", f"/v1/webhook_endpoints/{made['id']}", api_key)
    assert "secret" not in got
    assert got == {k: v for k, v in made.items() if k != "secret"}
    listed = await call(client, "GET", "/v1/webhook_endpoints", api_key)
    assert [e["id"] for e in listed["data"]] == [made["id"]]
    assert "secret" not in listed["data"][0]


async def test_update_rotate_and_delete(client: Client, api_key: str) -> None:
    made = await create(client, api_key)
    path = f"/v1/webhook_endpoints/{made['id']}"
    updated = await call(client, "POST", path, api_key, {"enabled_events": ["*"], "disabled": True})
    assert updated["enabled_events"] == ["*"]
    assert updated["status"] == "disabled"
    assert updated["url"] == URL
    enabled = await call(client, "POST", path, api_key, {"disabled": False})
    assert enabled["status"] == "enabled"
    assert enabled["disabled_reason"] is None
    rotated = await call(client, "POST", path + "/rotate_secret", api_key, {"expires_in": 60})
    assert rotated["secret"] != made["secret"]
    assert rotated["previous_secret_expires"] - rotated["created"] >= 60
    deleted = await call(client, "DELETE", path, api_key)
    assert deleted == {"object": "webhook_endpoint", "id": made["id"], "deleted": True}
    await call(client, "GET", path, api_key, status=404)


async def test_the_delivery_log_and_redelivery(
    client: Client, api_key: str, db: asyncpg.Connection
) -> None:
    made = await create(client, api_key)
    await events.enqueue(db, "acme", events.LIMIT_REACHED, "s-1", {"n": 1})
    # A delivery as the fan-out makes it, without running the notifier.
    await db.execute(
        "INSERT INTO webhook_deliveries (id, event_id, endpoint_id, tenant, next_attempt_at,"
        " created_at, retry_from, status, attempts) SELECT 'whd_1', id, $1, 'acme', now(),"
        " now(), now(), 'failed', 1 FROM webhook_events",
        made["id"],
    )
    await db.execute(
        "INSERT INTO webhook_delivery_attempts VALUES ('whd_1', 1, now(), now(), 500, 'HTTP 500')"
    )
    path = f"/v1/webhook_endpoints/{made['id']}/deliveries"
    listed = await call(client, "GET", path, api_key)
    [delivery] = listed["data"]
    assert delivery["status"] == "failed"
    assert delivery["next_attempt"] is None
    assert delivery["event"]["type"] == events.LIMIT_REACHED
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500]
    again = await call(client, "POST", f"{path}/whd_1/redeliver", api_key)
    assert again["status"] == "pending"
    assert again["next_attempt"] is not None
    pending = await call(client, "GET", path + "?status=pending", api_key)
    assert [d["id"] for d in pending["data"]] == ["whd_1"]
    await call(client, "POST", f"{path}/whd_2/redeliver", api_key, status=404)


async def test_a_tenant_never_sees_another_tenants_endpoints(
    client: Client, api_key: str, db: asyncpg.Connection
) -> None:
    made = await create(client, api_key)
    other = await auth.create_key(db, name="other", tenant="beta")
    path = f"/v1/webhook_endpoints/{made['id']}"
    assert (await call(client, "GET", "/v1/webhook_endpoints", other))["data"] == []
    for method, suffix, body in (
        ("GET", "", None),
        ("POST", "", {"disabled": True}),
        ("DELETE", "", None),
        ("POST", "/rotate_secret", {}),
        ("GET", "/deliveries", None),
        ("POST", "/deliveries/whd_1/redeliver", None),
    ):
        doc = await call(client, method, path + suffix, other, body, status=404)
        assert doc["error"]["type"] == "not_found"
    # Untouched by all that.
    got = await call(client, "GET", path, api_key)
    assert got["status"] == "enabled"


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"enabled_events": ["*"]}, "url", "required"),
        ({"url": "ftp://x.example/", "enabled_events": ["*"]}, "url", "http://"),
        ({"url": "https:///nohost", "enabled_events": ["*"]}, "url", "host"),
        ({"url": "https://a b.example/", "enabled_events": ["*"]}, "url", "spaces"),
        ({"url": "https://u:p@x.example/", "enabled_events": ["*"]}, "url", "credentials"),
        ({"url": 7, "enabled_events": ["*"]}, "url", "required"),
        ({"url": URL}, "enabled_events", "required"),
        ({"url": URL, "enabled_events": []}, "enabled_events", "non-empty"),
        ({"url": URL, "enabled_events": ["usage.nope"]}, "enabled_events", "usage.nope"),
        ({"url": URL, "enabled_events": [1]}, "enabled_events", "not an event type"),
        ({"url": URL, "enabled_events": ["*"], "secret": "x"}, "secret", "unknown field"),
    ],
)
async def test_bad_endpoints_are_refused_per_field(
    client: Client, api_key: str, body: dict[str, Any], param: str, words: str
) -> None:
    doc = await call(client, "POST", "/v1/webhook_endpoints", api_key, body, status=400)
    assert doc["error"]["param"] == param
    assert words in doc["error"]["message"]


async def test_other_bad_inputs_are_400s(client: Client, api_key: str) -> None:
    made = await create(client, api_key)
    path = f"/v1/webhook_endpoints/{made['id']}"
    bad = [
        ("POST", path, {"disabled": "yes"}, "disabled"),
        ("POST", path + "/rotate_secret", {"expires_in": 8 * 86400}, "expires_in"),
        ("POST", path + "/rotate_secret", {"expires_in": -1}, "expires_in"),
        ("GET", "/v1/webhook_endpoints?limit=0", None, "limit"),
        ("GET", path + "/deliveries?status=lost", None, "status"),
    ]
    for method, target, body, param in bad:
        doc = await call(client, method, target, api_key, body, status=400)
        assert doc["error"]["param"] == param, target
    response = await client.post(
        "/v1/webhook_endpoints", data=b"{not json", headers=bearer(api_key)
    )
    assert response.status == 400
    response = await client.get("/v1/webhook_endpoints")
    assert response.status == 401


async def test_a_private_url_is_a_400(settings: Settings, api_key: str) -> None:
    public_only = await start_client(settings.replace(notifier_private_urls=False))
    try:
        body = {"url": "http://169.254.169.254/latest", "enabled_events": ["*"]}
        doc = await call(public_only, "POST", "/v1/webhook_endpoints", api_key, body, status=400)
        assert doc["error"]["param"] == "url"
        assert "METER_NOTIFIER_PRIVATE_URLS" in doc["error"]["message"]
        made = await create(public_only, api_key)
        path = f"/v1/webhook_endpoints/{made['id']}"
        await call(public_only, "POST", path, api_key, {"url": "http://[::1]/x"}, status=400)
        await call(public_only, "GET", path, api_key)  # unchanged, still there
    finally:
        await public_only.close()
