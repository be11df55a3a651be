"""Subscription lifecycles on Stripe test clocks, observed only through webhooks and our API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meter.stripe_emulator import pricing

from .conftest import Stack, catalog, clock_customer, hour_now


class Recorder:
    """A notifier that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, kind: str, payload: Mapping[str, Any]) -> None:
        self.sent.append((kind, dict(payload)))

    async def close(self) -> None:
        return None


async def test_checkout_usage_rollover_invoice_paid(stack: Stack) -> None:
    cat = await catalog(stack.sdk)
    start = hour_now()
    clock, cus = await clock_customer(stack.sdk, "cust-1", start)
    await stack.settle()
    status, doc = await stack.get("/v1/customers/cust-1/subscription")
    assert status == 404
    status, doc = await stack.post(
        "/v1/customers/cust-1/checkout-session",
        {"prices": [cat["basic"], cat["metered"]], "success_url": "https://app.example/ok"},
    )
    assert status == 200, doc
    assert doc["url"].startswith("https://")
    # A retried request replays Stripe's answer: the same session, not a second one.
    again = await stack.post(
        "/v1/customers/cust-1/checkout-session",
        {"prices": [cat["basic"], cat["metered"]], "success_url": "https://app.example/ok"},
    )
    assert again == (200, doc)
    await stack.complete_checkout(doc["id"])
    await stack.settle()
    status, view = await stack.get("/v1/customers/cust-1/subscription")
    assert status == 200, view
    sub = view["subscription"]
    assert view["stripe_customer"] == cus
    assert sub["status"] == "active"
    assert sub["plan"]["price"] == cat["basic"]
    assert {i["price"] for i in sub["items"]} == {cat["basic"], cat["metered"]}
    assert [i["meter"] for i in sub["items"] if i["price"] == cat["metered"]] == ["calls"]
    end = pricing.add_interval(start, "month", 1)
    assert sub["current_period"] == {"start": start, "end": end}
    # Usage goes to Stripe's meter; the next invoice bills it in arrears.
    await stack.billing.gateway.report_usage(
        event_name="calls", customer=cus, value="500", identifier="u-1", timestamp=start + 60
    )
    await stack.sdk.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": end + 7200})
    await stack.settle()
    status, view = await stack.get("/v1/customers/cust-1/subscription")
    assert view["subscription"]["current_period"]["start"] == end
    async with stack.billing.connection() as conn:
        cycle = await conn.fetchrow(
            "SELECT * FROM invoices WHERE billing_reason = 'subscription_cycle'"
        )
    assert cycle is not None
    assert (cycle["status"], cycle["total"]) == ("paid", 2000 + 500 * 2)
    stripe_invoice = await stack.sdk.v1.invoices.retrieve_async(cycle["id"])
    assert stripe_invoice.total == cycle["total"]


async def test_failure_past_due_dunning_restricted_then_paid_restored(stack: Stack) -> None:
    recorder = Recorder()
    stack.billing.notifier = recorder
    cat = await catalog(stack.sdk)
    start = hour_now()
    clock, cus = await clock_customer(stack.sdk, "cust-2", start)
    sub = await stack.sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["basic"]}]}
    )
    await stack.settle()
    status, ent = await stack.get("/v1/customers/cust-2/entitlements")
    assert (ent["access"], ent["reason"]) == ("allowed", "active")
    assert ent["features"] == ["sso", "export"]
    assert ent["limits"]["calls"] == {
        "limit": 1000,
        "used": 0,
        "remaining": 1000,
        "exceeded": False,
    }
    stack.payments(cus, "fail")
    end = pricing.add_interval(start, "month", 1)
    await stack.sdk.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": end + 7200})
    await stack.settle()
    status, view = await stack.get("/v1/customers/cust-2/subscription")
    assert view["subscription"]["status"] == "past_due"
    dunning = view["subscription"]["dunning"]
    assert dunning is not None
    failed_at = dunning["failed_at"]
    status, ent = await stack.get("/v1/customers/cust-2/entitlements")
    assert (ent["access"], ent["reason"]) == ("allowed", "past_due_grace")
    grace = int(stack.settings.billing_grace_period_s)
    assert ent["grace_until"] == failed_at + grace
    # Dunning steps at their times (schedule 0, 3 d, 6 d; grace 7 d).
    await stack.jobs(failed_at)
    assert [k for k, _ in recorder.sent] == ["payment_reminder"]
    await stack.jobs(failed_at + 60)
    assert len(recorder.sent) == 1  # nothing new is due
    await stack.jobs(failed_at + 6 * 86400)
    assert [p["step"] for _, p in recorder.sent] == [0, 1, 2]
    assert recorder.sent[0][1]["customer"] == "cust-2"
    await stack.jobs(failed_at + grace)
    assert recorder.sent[-1][0] == "access_restricted"
    status, ent = await stack.get("/v1/customers/cust-2/entitlements")
    assert (ent["access"], ent["reason"]) == ("restricted", "past_due_grace_expired")
    assert ent["features"] == []
    metrics = stack.billing.metrics
    assert metrics.dunning.labels("restricted")._value.get() == 1
    assert metrics.subscriptions.labels("past_due")._value.get() == 1
    # The customer fixes the card; the open invoice is paid.
    stack.payments(cus, "succeed")
    invoice = (await stack.sdk.v1.invoices.list_async({"customer": cus, "status": "open"})).data[0]
    await stack.sdk.v1.invoices.pay_async(invoice.id)
    await stack.settle()
    status, view = await stack.get("/v1/customers/cust-2/subscription")
    assert view["subscription"]["status"] == "active"
    assert view["subscription"]["dunning"] is None
    status, ent = await stack.get("/v1/customers/cust-2/entitlements")
    assert (status, ent["access"], ent["reason"]) == (200, "allowed", "active")
    await stack.jobs(failed_at + 30 * 86400)
    assert len(recorder.sent) == 4  # dunning is over: no more notices
    assert metrics.invoice_payments.labels("failed")._value.get() == 1
    assert metrics.invoice_payments.labels("succeeded")._value.get() >= 2
    assert metrics.mrr.labels("usd")._value.get() == 2000
    assert sub.id == view["subscription"]["id"]


async def test_trial_then_paid(stack: Stack) -> None:
    cat = await catalog(stack.sdk)
    start = hour_now()
    clock, cus = await clock_customer(stack.sdk, "cust-3", start)
    await stack.sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["basic"]}], "trial_period_days": 7}
    )
    await stack.settle()
    status, view = await stack.get("/v1/customers/cust-3/subscription")
    assert view["subscription"]["status"] == "trialing"
    assert view["subscription"]["trial"] == {"start": start, "end": start + 7 * 86400}
    status, ent = await stack.get("/v1/customers/cust-3/entitlements")
    assert (ent["access"], ent["reason"]) == ("allowed", "trialing")
    await stack.sdk.v1.test_helpers.test_clocks.advance_async(
        clock, {"frozen_time": start + 8 * 86400}
    )
    await stack.settle()
    status, view = await stack.get("/v1/customers/cust-3/subscription")
    assert (status, view["subscription"]["status"]) == (200, "active")
    assert view["subscription"]["current_period"]["start"] == start + 7 * 86400
    async with stack.billing.connection() as conn:
        paid = await conn.fetch("SELECT total FROM invoices WHERE status = 'paid' AND total > 0")
        kinds = await conn.fetch("SELECT DISTINCT type FROM stripe_events")
    assert [r["total"] for r in paid] == [2000]
    assert "customer.subscription.trial_will_end" in {r["type"] for r in kinds}


async def test_upgrade_preview_equals_charge(stack: Stack) -> None:
    cat = await catalog(stack.sdk)
    start = hour_now()
    clock, cus = await clock_customer(stack.sdk, "cust-4", start)
    await stack.sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["basic"]}]}
    )
    end = pricing.add_interval(start, "month", 1)
    # A third of the period in: two thirds of the difference are due.
    await stack.sdk.v1.test_helpers.test_clocks.advance_async(
        clock, {"frozen_time": start + (end - start) // 3}
    )
    await stack.settle()
    change = {"price": cat["pro"], "proration_behavior": "always_invoice"}
    status, preview = await stack.post(
        "/v1/customers/cust-4/subscription/change-plan", {**change, "preview": True}
    )
    assert status == 200, preview
    assert 0 < preview["amount_due_now"] < 3000
    assert preview["next_invoice"]["amount_due"] == 5000
    assert [line["amount"] < 0 for line in preview["proration_lines"]] == [True, False]
    status, view = await stack.post(
        "/v1/customers/cust-4/subscription/change-plan",
        {**change, "proration_date": preview["proration_date"]},
    )
    assert status == 200, view
    assert view["subscription"]["plan"]["price"] == cat["pro"]
    await stack.settle()
    async with stack.billing.connection() as conn:
        charged = await conn.fetchrow(
            "SELECT id, total, status FROM invoices WHERE billing_reason = 'subscription_update'"
        )
    assert charged is not None
    assert (charged["total"], charged["status"]) == (preview["amount_due_now"], "paid")
    assert (await stack.sdk.v1.invoices.retrieve_async(charged["id"])).total == charged["total"]
    status, ent = await stack.get("/v1/customers/cust-4/entitlements")
    assert ent["features"] == ["sso", "export", "audit"]


async def test_cancel_at_period_end_then_resume(stack: Stack) -> None:
    cat = await catalog(stack.sdk)
    start = hour_now()
    clock, cus = await clock_customer(stack.sdk, "cust-5", start)
    await stack.sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["basic"]}]}
    )
    await stack.settle()
    status, view = await stack.post("/v1/customers/cust-5/subscription/cancel")
    assert status == 200, view
    assert view["subscription"]["cancel_at_period_end"] is True
    assert view["subscription"]["status"] == "active"
    status, view = await stack.post("/v1/customers/cust-5/subscription/resume")
    assert view["subscription"]["cancel_at_period_end"] is False
    status, doc = await stack.post("/v1/customers/cust-5/subscription/resume")
    assert (status, doc["error"]["type"]) == (409, "conflict")
    await stack.settle()
    end = pricing.add_interval(start, "month", 1)
    await stack.sdk.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": end + 7200})
    await stack.settle()
    status, view = await stack.get("/v1/customers/cust-5/subscription")
    assert view["subscription"]["status"] == "active"
    # Cancel again (a new request, not a replay of the first): it ends at the period end.
    status, view = await stack.post("/v1/customers/cust-5/subscription/cancel")
    assert view["subscription"]["cancel_at_period_end"] is True
    end2 = pricing.add_interval(end, "month", 1)
    await stack.sdk.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": end2 + 60})
    await stack.settle()
    status, view = await stack.get("/v1/customers/cust-5/subscription")
    assert view["subscription"]["status"] == "canceled"
    status, ent = await stack.get("/v1/customers/cust-5/entitlements")
    assert (ent["access"], ent["reason"]) == ("restricted", "canceled")
    assert stack.billing.metrics.churned._value.get() == 1
