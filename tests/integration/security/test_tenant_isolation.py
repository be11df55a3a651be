"""A key of one tenant can never read or write another tenant's customers: every route under
/v1/customers/{id}/ answers 404 (the same as for a customer that does not exist, so it reveals
nothing), calls Stripe for nothing, and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from meter import auth
from meter.config import Settings
from tests.integration.billing.conftest import Stack, catalog, make_stack

OTHER = "globex"

Request = tuple[str, str, dict[str, Any] | None]


def routes(cat: dict[str, Any]) -> list[Request]:
    """Every customer route, with a body valid enough that only scoping can refuse it."""
    return [
        ("GET", "/subscription", None),
        ("GET", "/entitlements", None),
        ("GET", "/usage", None),
        ("GET", "/usage/history", None),
        ("POST", "/portal-session", {"return_url": "https://app.example/back"}),
        ("POST", "/payment-method/setup-intent", {}),
        ("POST", "/subscription/change-plan", {"price": cat["pro"], "preview": True}),
        ("POST", "/subscription/change-plan", {"price": cat["pro"]}),
        ("POST", "/subscription/cancel", {}),
        ("POST", "/subscription/cancel", {"immediately": True}),
        ("POST", "/subscription/resume", {}),
    ]


@pytest.fixture
async def stack(settings: Settings, api_key: str) -> AsyncIterator[Stack]:
    async for s in make_stack(settings, api_key):
        yield s


async def call(stack: Stack, key: str, method: str, path: str, body: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    if method == "GET":
        response = await stack.client.get(path, headers=headers)
    else:
        response = await stack.client.post(path, json=body, headers=headers)
    return response.status, await response.json()


async def subscribed_customer(stack: Stack, cat: dict[str, Any]) -> tuple[str, str]:
    """Tenant acme's customer `cust-a` on the basic plan plus usage: (its cus_ id, its sub id)."""
    cus = await stack.sdk.v1.customers.create_async(
        {"email": "a@acme.io", "metadata": {"meter_customer": "cust-a", "meter_tenant": "acme"}}
    )
    sub = await stack.sdk.v1.subscriptions.create_async(
        {"customer": cus.id, "items": [{"price": cat["basic"]}, {"price": cat["metered"]}]}
    )
    await stack.settle()
    return cus.id, sub.id


async def test_another_tenants_key_gets_404_on_every_customer_route(
    stack: Stack, db: asyncpg.Connection
) -> None:
    cat = await catalog(stack.sdk)
    cus, sub = await subscribed_customer(stack, cat)
    other_key = await auth.create_key(db, name="other", tenant=OTHER)
    before_sub = await stack.sdk.v1.subscriptions.retrieve_async(sub)
    before_rows = await db.fetch("SELECT * FROM customers ORDER BY stripe_id")
    stripe_calls = len(stack.emu.state.request_log)

    for ident in ("cust-a", cus):  # our id and the Stripe id both name the customer
        for method, tail, body in routes(cat):
            status, doc = await call(stack, other_key, method, f"/v1/customers/{ident}{tail}", body)
            assert status == 404, (method, tail, ident, doc)
            assert doc["error"]["type"] == "not_found"
            assert "acme" not in doc["error"]["message"]
        # Checkout with a Stripe id of another tenant must not create a shadow customer.
        status, doc = await call(
            stack,
            other_key,
            "POST",
            f"/v1/customers/{cus}/checkout-session",
            {"prices": [cat["basic"]], "success_url": "https://app.example/ok"},
        )
        assert status == 404, doc

    # Nothing reached Stripe, nothing changed here or there.
    assert len(stack.emu.state.request_log) == stripe_calls
    assert await db.fetch("SELECT * FROM customers ORDER BY stripe_id") == before_rows
    after_sub = await stack.sdk.v1.subscriptions.retrieve_async(sub)
    assert after_sub.to_dict() == before_sub.to_dict()

    # The same requests with the owner's key do reach the customer (so the 404s above came
    # from tenant scoping, not from a broken request).
    for method, tail, body in routes(cat):
        if tail in ("/subscription/change-plan", "/subscription/cancel") and not body.get(
            "preview"
        ):
            continue  # state-changing: checked once below
        if tail == "/subscription/resume":
            continue
        status, doc = await call(stack, stack.api_key, method, f"/v1/customers/cust-a{tail}", body)
        assert status == 200, (method, tail, doc)
    status, doc = await call(
        stack, stack.api_key, "POST", "/v1/customers/cust-a/subscription/cancel", {}
    )
    assert (status, doc["subscription"]["cancel_at_period_end"]) == (200, True)
    status, doc = await call(
        stack, stack.api_key, "POST", "/v1/customers/cust-a/subscription/resume", {}
    )
    assert (status, doc["subscription"]["cancel_at_period_end"]) == (200, False)


async def test_checkout_with_another_tenants_id_makes_a_customer_of_the_callers_own(
    stack: Stack, db: asyncpg.Connection
) -> None:
    """External ids are per tenant: `cust-a` of globex is not `cust-a` of acme."""
    cat = await catalog(stack.sdk)
    cus, _ = await subscribed_customer(stack, cat)
    other_key = await auth.create_key(db, name="other", tenant=OTHER)
    acme_row = await db.fetchrow("SELECT * FROM customers WHERE stripe_id = $1", cus)
    status, doc = await call(
        stack,
        other_key,
        "POST",
        "/v1/customers/cust-a/checkout-session",
        {"prices": [cat["basic"]], "success_url": "https://app.example/ok"},
    )
    assert status == 200, doc
    session = await stack.sdk.v1.checkout.sessions.retrieve_async(doc["id"])
    assert session.customer != cus
    owner = await db.fetchrow(
        "SELECT tenant, external_id FROM customers WHERE stripe_id = $1", session.customer
    )
    assert owner is not None
    assert (owner["tenant"], owner["external_id"]) == (OTHER, "cust-a")
    assert await db.fetchrow("SELECT * FROM customers WHERE stripe_id = $1", cus) == acme_row
    # And acme's view of its own customer is still its own.
    status, view = await call(
        stack, stack.api_key, "GET", "/v1/customers/cust-a/subscription", None
    )
    assert (status, view["stripe_customer"]) == (200, cus)
