"""A key that names two live customers of a tenant (our id of one, the cus_ id of another) names
the one whose external id it is, wherever the API looks the customer up."""

from __future__ import annotations

from meter.billing import api, views

from .conftest import Stack


async def test_checkout_and_subscription_lookups_answer_the_same_customer(stack: Stack) -> None:
    async with stack.billing.connection() as conn:
        # Which one a lookup without an order meets first is the plan's choice: here, the
        # customer whose Stripe id the key is.
        await conn.execute(
            "INSERT INTO customers (stripe_id, tenant, external_id, event_created)"
            " VALUES ('cus_KEYB', 'acme', 'cus_KEYA', 1), ('cus_KEYA', 'acme', 'our-a', 1)"
        )
        shown = await views.customer_row(conn, "acme", "cus_KEYA")
    ensured = await api._ensure_customer(stack.billing, "acme", "cus_KEYA", None)
    assert shown["stripe_id"] == "cus_KEYB"
    assert ensured["stripe_id"] == shown["stripe_id"]
