"""A change made through our API races the webhooks Stripe sends about the same subscription."""

from __future__ import annotations

import time

import orjson

from meter.billing import store
from meter.stripe_emulator.webhooks import sign

from .conftest import SECRET, Stack, catalog


async def test_a_change_raced_by_a_stale_webhook_stores_stripes_current_copy(
    stack: Stack,
) -> None:
    """We read the row's version, call Stripe, and store its answer. If a webhook landed in
    between (here: a snapshot taken before the change, stamped a second later), the answer's
    order against it is unknown: Stripe's current copy must win, not the webhook's snapshot."""
    cat = await catalog(stack.sdk)
    cus = await stack.sdk.v1.customers.create_async({"metadata": {"meter_customer": "c-race"}})
    sub = await stack.sdk.v1.subscriptions.create_async(
        {"customer": cus.id, "items": [{"price": cat["basic"]}]}
    )
    await stack.settle()
    async with stack.billing.connection() as conn:
        version = await conn.fetchval(
            "SELECT event_created FROM subscriptions WHERE id = $1", sub.id
        )
    snapshot = orjson.loads(str(await stack.sdk.v1.subscriptions.retrieve_async(sub.id)))
    assert snapshot["cancel_at_period_end"] is False

    answer = await stack.billing.gateway.cancel(sub.id, at_period_end=True, idempotency_key="k1")
    # Someone changes it again in Stripe after our answer: our answer is not current either.
    await stack.sdk.v1.subscriptions.update_async(sub.id, {"metadata": {"v": "2"}})
    await stack.settle()
    created = max(int(time.time()), version) + 1
    body = orjson.dumps(
        {
            "id": "evt_stale_snapshot",
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": created,
            "data": {"object": snapshot},
            "livemode": False,
            "type": "customer.subscription.updated",
        }
    )
    headers = {"Stripe-Signature": sign(body.decode(), SECRET, int(time.time()))}
    response = await stack.client.post("/stripe/webhook", data=body, headers=headers)
    assert response.status == 200
    async with stack.billing.connection() as conn:
        stale = (
            "SELECT cancel_at_period_end, metadata->>'v', event_created"
            " FROM subscriptions WHERE id = $1"
        )
        assert tuple(await conn.fetchrow(stale, sub.id)) == (False, None, created)
        async with conn.transaction():
            await store.apply_subscription_answer(
                conn, answer, version, stack.billing.refetch, "acme", stack.billing.upkeep
            )
        # Stripe's current copy is stored, neither the snapshot nor our (already old) answer;
        # the row keeps the newest event version.
        assert tuple(await conn.fetchrow(stale, sub.id)) == (True, "2", created)
