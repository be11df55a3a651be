"""What tests/integration/billing/test_webhooks.py does not cover: the webhook body cap, and a
signature from the future (a clock-skewed or forged timestamp) is no way around the tolerance."""

from __future__ import annotations

import gzip
import io
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from meter.config import Settings
from meter.stripe_emulator.webhooks import sign
from tests.integration.billing.conftest import SECRET, Stack, make_stack


@pytest.fixture
async def stack(settings: Settings, api_key: str) -> AsyncIterator[Stack]:
    async for s in make_stack(settings, api_key):
        yield s


def customer_event(padding: int = 0) -> bytes:
    return orjson.dumps(
        {
            "id": "evt_big",
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": "cus_big",
                    "object": "customer",
                    "metadata": {"meter_customer": "big", "pad": "x" * padding},
                }
            },
            "livemode": False,
            "type": "customer.created",
        }
    )


async def recorded(stack: Stack) -> int:
    async with stack.billing.connection() as conn:
        n: int = await conn.fetchval("SELECT count(*) FROM stripe_events")
    return n


@pytest.mark.parametrize("gzipped", [False, True])
async def test_a_correctly_signed_body_over_the_cap_gets_413(stack: Stack, gzipped: bool) -> None:
    cap = stack.settings.max_body_bytes
    body = customer_event(cap)
    assert len(body) > cap
    headers = {"Stripe-Signature": sign(body.decode(), SECRET, int(time.time()))}
    data = body
    if gzipped:  # small on the wire, over the cap once inflated
        data = gzip.compress(body)
        assert len(data) < cap // 100
        headers["Content-Encoding"] = "gzip"
    response = await stack.client.post("/stripe/webhook", data=io.BytesIO(data), headers=headers)
    assert response.status == 413
    assert (await response.json())["error"]["type"] == "invalid_request_error"
    assert await recorded(stack) == 0
    # The same event under the cap is applied: the 413 was the size, nothing else.
    small = customer_event()
    response = await stack.client.post(
        "/stripe/webhook",
        data=small,
        headers={"Stripe-Signature": sign(small.decode(), SECRET, int(time.time()))},
    )
    assert response.status == 200
    assert await recorded(stack) == 1


async def test_a_signature_for_a_tampered_body_is_refused(stack: Stack) -> None:
    body = customer_event()
    signature = sign(body.decode(), SECRET, int(time.time()))
    tampered = body.replace(b'"big"', b'"evil"')
    response = await stack.client.post(
        "/stripe/webhook", data=tampered, headers={"Stripe-Signature": signature}
    )
    assert response.status == 400
    assert (await response.json())["error"]["type"] == "signature_verification_error"
    assert await recorded(stack) == 0
