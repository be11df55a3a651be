"""Hostile bodies get a 400 or a per-item rejection that names the problem, never a 500."""

from __future__ import annotations

from typing import Any

from meter.ingest.validation import MAX_PROPERTIES_DEPTH


def nested(levels: int) -> bytes:
    """`levels` objects around 1, as JSON text (orjson cannot write past 254 levels)."""
    return b'{"k":' * levels + b"1" + b"}" * levels


def event(event_id: str, properties: bytes) -> bytes:
    return b'{"id":"%s","customer":"c","meter":"m","properties":%s}' % (
        event_id.encode(),
        properties,
    )


async def post(client: Any, key: str, body: bytes) -> tuple[int, Any]:
    response = await client.post(
        "/v1/events", data=body, headers={"Authorization": f"Bearer {key}"}
    )
    return response.status, await response.json()


async def test_a_body_nested_past_the_parsers_limit_gets_400(client: Any, api_key: str) -> None:
    status, doc = await post(client, api_key, b"[" * 5000 + b"]" * 5000)
    assert status == 400
    assert doc["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in doc["error"]["message"]
    assert "depth" in doc["error"]["message"]


async def test_deep_properties_are_rejected_by_item_not_a_500(client: Any, api_key: str) -> None:
    body = b"[%s]" % b",".join(
        [
            event("flat", nested(MAX_PROPERTIES_DEPTH)),
            event("deep", nested(9)),
            # Small enough for the 4 KiB cap, too deep for orjson to serialize (254 levels).
            event("abyss", nested(400)),
        ]
    )
    assert len(nested(400)) < 4096
    status, doc = await post(client, api_key, body)
    assert status == 200, doc
    assert [r["status"] for r in doc["results"]] == ["accepted", "rejected", "rejected"]
    assert {r.get("reason") for r in doc["results"][1:]} == {"properties_too_deep"}
    assert (doc["accepted"], doc["rejected"]) == (1, 2)


async def test_billing_api_refuses_deep_bodies_with_400(client: Any, api_key: str) -> None:
    response = await client.post(
        "/v1/customers/c1/subscription/cancel",
        data=b"{" + b'"a":{' * 2000 + b"}" * 2001,
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status == 400
    assert (await response.json())["error"]["type"] == "invalid_request_error"
