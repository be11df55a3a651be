"""A checkout for a customer who already has a live subscription would start a second one, and
Stripe bills every meter event on each subscription with a price on that meter: refused (409,
pointing at change-plan) unless the caller asks for a second subscription explicitly."""

from __future__ import annotations

from typing import Any

from .conftest import Stack, catalog


async def _checkout(stack: Stack, body: dict[str, Any]) -> tuple[int, Any]:
    return await stack.post("/v1/customers/twice-1/checkout-session", body)


async def test_second_checkout_is_refused_unless_asked_for(stack: Stack) -> None:
    cat = await catalog(stack.sdk)
    body: dict[str, Any] = {"prices": [cat["metered"]], "success_url": "https://a/ok"}
    status, doc = await _checkout(stack, body)
    assert status == 200, doc
    await stack.complete_checkout(doc["id"])
    await stack.settle()

    status, doc = await _checkout(stack, body)
    assert status == 409, doc
    assert doc["error"]["type"] == "conflict"
    assert doc["error"]["param"] == "additional_subscription"
    assert "/v1/customers/twice-1/subscription/change-plan" in doc["error"]["message"]

    status, doc = await _checkout(stack, body | {"additional_subscription": "yes"})
    assert (status, doc["error"]["param"]) == (400, "additional_subscription")

    # Asked for explicitly: a second subscription, as the caller wants.
    status, doc = await _checkout(stack, body | {"additional_subscription": True})
    assert status == 200, doc
    await stack.complete_checkout(doc["id"])
    await stack.settle()
    async with stack.billing.connection() as conn:
        live = await conn.fetchval(
            "SELECT count(*) FROM subscriptions s JOIN customers c ON c.stripe_id = s.customer"
            " WHERE c.external_id = 'twice-1' AND s.status = 'active'"
        )
    assert live == 2
