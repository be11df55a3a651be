"""Cancel now: the period's metered usage is billed on a final invoice (meter's default), as
Stripe does with `invoice_now` (https://docs.stripe.com/api/subscriptions/cancel)."""

from __future__ import annotations

from .conftest import Stack, catalog, clock_customer, hour_now


async def _subscribed(stack: Stack, external_id: str) -> tuple[dict[str, str], str, str, int]:
    cat = await catalog(stack.sdk)
    start = hour_now()
    clock, cus = await clock_customer(stack.sdk, external_id, start)
    await stack.sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["basic"]}, {"price": cat["metered"]}]}
    )
    await stack.settle()
    return cat, clock, cus, start


async def _final_invoices(stack: Stack, sub: str) -> list[dict[str, object]]:
    invoices = await stack.sdk.v1.invoices.list_async({"subscription": sub})
    return [i.to_dict() for i in invoices.data if i.billing_reason != "subscription_create"]


async def test_cancel_now_invoices_the_periods_usage_by_default(stack: Stack) -> None:
    _, clock, cus, start = await _subscribed(stack, "cust-c1")
    gateway = stack.billing.gateway
    await gateway.report_usage(
        event_name="calls", customer=cus, value="500", identifier="c1-a", timestamp=start + 60
    )
    await stack.sdk.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": start + 600})
    status, view = await stack.post(
        "/v1/customers/cust-c1/subscription/cancel", {"immediately": True}
    )
    assert status == 200, view
    assert view["subscription"]["status"] == "canceled"
    sub = view["subscription"]["id"]
    await stack.settle()
    [final] = await _final_invoices(stack, sub)
    assert final["status"] == "draft"
    # Late usage of the canceled period, reported within the finalization grace period, is
    # still billed on the final invoice.
    await gateway.report_usage(
        event_name="calls", customer=cus, value="100", identifier="c1-b", timestamp=start + 300
    )
    await stack.sdk.v1.test_helpers.test_clocks.advance_async(
        clock, {"frozen_time": start + 600 + 7200}
    )
    await stack.settle()
    [final] = await _final_invoices(stack, sub)
    assert (final["status"], final["total"]) == ("paid", 600 * 2)
    async with stack.billing.connection() as conn:
        stored = await conn.fetchrow(
            "SELECT status, total FROM invoices WHERE id = $1", final["id"]
        )
    assert (stored["status"], stored["total"]) == ("paid", 1200)


async def test_cancel_now_without_invoice_bills_nothing(stack: Stack) -> None:
    _, _, cus, start = await _subscribed(stack, "cust-c2")
    await stack.billing.gateway.report_usage(
        event_name="calls", customer=cus, value="500", identifier="c2-a", timestamp=start + 60
    )
    status, view = await stack.post(
        "/v1/customers/cust-c2/subscription/cancel", {"immediately": True, "invoice_now": False}
    )
    assert status == 200, view
    await stack.settle()
    assert await _final_invoices(stack, view["subscription"]["id"]) == []


async def test_cancel_now_with_prorate_credits_unused_time(stack: Stack) -> None:
    await _subscribed(stack, "cust-c3")
    status, view = await stack.post(
        "/v1/customers/cust-c3/subscription/cancel", {"immediately": True, "prorate": True}
    )
    assert status == 200, view
    await stack.settle()
    [final] = await _final_invoices(stack, view["subscription"]["id"])
    credits = [line for line in final["lines"]["data"] if line["amount"] < 0]
    assert len(credits) == 1
    assert -2000 <= credits[0]["amount"] < -1990  # nearly the whole month is unused


async def test_cancel_choices_are_checked(stack: Stack) -> None:
    await _subscribed(stack, "cust-c4")
    path = "/v1/customers/cust-c4/subscription/cancel"
    for body, param in (
        ({"invoice_now": True}, "invoice_now"),
        ({"prorate": True}, "prorate"),
        ({"immediately": True, "invoice_now": "yes"}, "invoice_now"),
        ({"immediately": True, "invoice_now": False, "prorate": True}, "prorate"),
    ):
        status, doc = await stack.post(path, body)
        assert (status, doc["error"]["param"]) == (400, param), (body, doc)
    status, view = await stack.get("/v1/customers/cust-c4/subscription")
    assert view["subscription"]["status"] == "active"
