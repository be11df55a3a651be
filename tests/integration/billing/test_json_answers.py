"""Billing routes answer JSON as every other route does (meter/jsonwire.py): the same compact
bytes for the same document and the same Content-Type as the usage API."""

from __future__ import annotations

import time
from typing import Any

import orjson

from meter import jsonwire
from meter.stripe_emulator.webhooks import sign

from .conftest import SECRET, Stack, catalog


async def _raw(stack: Stack, method: str, path: str, body: Any = None) -> tuple[int, str, bytes]:
    response = await stack.client.request(method, path, json=body, headers=stack.auth)
    return response.status, response.headers["Content-Type"], await response.read()


def _as_jsonwire_writes_it(raw: bytes) -> bytes:
    return jsonwire.dumps(orjson.loads(raw))


async def test_billing_answers_are_written_like_every_other_answer(stack: Stack) -> None:
    cat = await catalog(stack.sdk)
    answers: dict[str, tuple[int, str, bytes]] = {}
    answers["checkout"] = await _raw(
        stack,
        "POST",
        "/v1/customers/j-1/checkout-session",
        {"prices": [{"price": cat["basic"], "quantity": 1}], "success_url": "https://a/ok"},
    )
    await stack.complete_checkout(orjson.loads(answers["checkout"][2])["id"])
    await stack.settle()
    answers["portal"] = await _raw(
        stack, "POST", "/v1/customers/j-1/portal-session", {"return_url": "https://a/account"}
    )
    answers["setup-intent"] = await _raw(
        stack, "POST", "/v1/customers/j-1/payment-method/setup-intent"
    )
    answers["subscription"] = await _raw(stack, "GET", "/v1/customers/j-1/subscription")
    answers["entitlements"] = await _raw(stack, "GET", "/v1/customers/j-1/entitlements")
    answers["change-plan preview"] = await _raw(
        stack,
        "POST",
        "/v1/customers/j-1/subscription/change-plan",
        {"price": cat["pro"], "preview": True},
    )
    event = orjson.dumps(
        {
            "id": "evt_json_1",
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": int(time.time()),
            "data": {"object": {"id": "cus_json", "object": "customer", "metadata": {}}},
            "livemode": False,
            "type": "customer.updated",
        }
    )
    webhook = await stack.client.post(
        "/stripe/webhook",
        data=event,
        headers={"Stripe-Signature": sign(event.decode(), SECRET, int(time.time()))},
    )
    answers["webhook"] = (webhook.status, webhook.headers["Content-Type"], await webhook.read())
    answers["error"] = await _raw(stack, "GET", "/v1/customers/nobody/subscription")
    answers["ingest"] = await _raw(
        stack, "POST", "/v1/events", {"id": "e1", "customer": "j-1", "meter": "calls"}
    )
    # The reference: the usage API, written by meter/jsonwire.py.
    usage_status, usage_type, usage_raw = await _raw(stack, "GET", "/v1/customers/j-1/usage")
    assert usage_status == 200, usage_raw
    assert usage_raw == _as_jsonwire_writes_it(usage_raw)

    statuses = {name: status for name, (status, _, _) in answers.items()}
    assert statuses == dict.fromkeys(answers, 200) | {"error": 404}, answers
    assert {name: ctype for name, (_, ctype, _) in answers.items()} == dict.fromkeys(
        answers, usage_type
    )
    assert [
        name for name, (_, _, raw) in answers.items() if raw != _as_jsonwire_writes_it(raw)
    ] == []
