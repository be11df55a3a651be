"""The subscription's lifecycle, end to end against the emulator (test clocks, webhooks, the
reporter): what meter projects is what Stripe invoices, for a trial, a cancellation at the
period end and paused collection. The oracle is the emulator's invoices, checked against
Stripe's documented rules (tests/integration/emulator/test_lifecycle.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter import wiring
from reporter.worker import Reporter
from tests.integration.billing.conftest import Stack, catalog, clock_customer, hour_now

from .test_emulator_preview import assert_invoice_equals

HOUR = 3600


async def _post_and_aggregate(stack: Stack, redis: Redis, events: list[dict[str, Any]]) -> None:
    response = await stack.client.post("/v1/events", data=orjson.dumps(events), headers=stack.auth)
    assert response.status == 200, await response.text()
    async with Worker(stack.settings, redis, attributor=wiring.attributor()) as worker:
        assert await worker.drain() == len(events)


def _call(customer: str, id_: str, value: int, at: int) -> dict[str, Any]:
    return {"id": id_, "customer": customer, "meter": "calls", "value": value, "timestamp": at}


def _cycle(invoices: list[Any]) -> Any:
    (cycle,) = [i for i in invoices if i.billing_reason == "subscription_cycle"]
    return cycle


def _metered(doc: Any) -> list[Any]:
    return [i for i in doc["items"] if i["usage_type"] == "metered"]


async def test_usage_of_a_trial_is_charged_by_no_invoice(stack: Stack, redis: Redis) -> None:
    sdk = stack.sdk
    cat = await catalog(sdk)  # metered 2 cents a call; basic 20.00
    start = hour_now() - 3 * HOUR
    trial_end = start + 2 * HOUR
    clock, cus = await clock_customer(sdk, "trial-1", start)
    await sdk.v1.subscriptions.create_async(
        {
            "customer": cus,
            "items": [{"price": cat["metered"]}, {"price": cat["basic"]}],
            "trial_end": trial_end,
        }
    )
    await stack.settle()
    # A grace longer than the test's past periods: the trial period is closed by its invoice.
    settings = stack.settings.replace(
        reporter_poll_interval_s=0.02,
        reporter_backoff_base_s=0.01,
        reporter_backoff_cap_s=0.05,
        reporter_invoice_grace_s=3 * HOUR,
    )

    # During the trial: usage is sent (Stripe counts it and charges none of it).
    await sdk.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": start + HOUR})
    await _post_and_aggregate(stack, redis, [_call("trial-1", "a", 40, start + 1800)])
    async with Reporter(settings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
    status, trialing = await stack.get(f"/v1/customers/{cus}/usage")
    assert status == 200, trialing
    assert_invoice_equals(trialing, await sdk.v1.invoices.create_preview_async({"customer": cus}))
    assert [(i["quantity"], i["amount"]) for i in _metered(trialing)] == [("40", 0)]
    assert trialing["invoice"]["usage_charged"] is False

    # The trial ends; its invoice is finalized an hour later and billing stores it.
    await sdk.v1.test_helpers.test_clocks.advance_async(
        clock, {"frozen_time": trial_end + 2 * HOUR}
    )
    await stack.settle()
    # Usage of the first paid period, and a late event stamped in the trial.
    late = [_call("trial-1", "b", 10, trial_end + 1800), _call("trial-1", "c", 20, start + HOUR)]
    await _post_and_aggregate(stack, redis, late)
    async with Reporter(settings, directory=wiring.customer_directory()) as reporter:
        await reporter.once()
        late_counts = {
            a: reporter.metrics.late.labels(a)._value.get() for a in ("trial", "carried")
        }

    # Stripe: the trial's invoice charged the first paid period's fee only; the next one bills
    # the 10 calls of the paid period, never the late trial event.
    trial_invoice = _cycle((await sdk.v1.invoices.list_async({"customer": cus})).data)
    assert trial_invoice.total == 2000
    preview = await sdk.v1.invoices.create_preview_async({"customer": cus})
    assert sorted((line.quantity, line.amount) for line in preview.lines.data) == [
        (1, 2000),
        (10, 20),
    ]
    status, doc = await stack.get(f"/v1/customers/{cus}/usage")
    assert status == 200, doc
    assert_invoice_equals(doc, preview)
    assert [i["quantity"] for i in _metered(doc)] == ["10"]
    # The trial period shows all its usage, charged 0, as its invoice.
    status, previous = await stack.get(f"/v1/customers/{cus}/usage?period=previous")
    assert status == 200, previous
    assert [(i["quantity"], i["amount"]) for i in _metered(previous)] == [("60", 0)]
    assert previous["invoice"]["total"] == trial_invoice.total
    # The late trial event was recorded, not sent: it is charged by no invoice.
    assert late_counts == {"trial": 1, "carried": 0}


async def test_cancel_at_period_end_projects_no_renewal(stack: Stack, redis: Redis) -> None:
    sdk = stack.sdk
    cat = await catalog(sdk)
    start = hour_now() - 3 * HOUR
    clock, cus = await clock_customer(sdk, "ending-1", start)
    sub = await sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["metered"]}, {"price": cat["basic"]}]}
    )
    end = sub["items"].data[0].current_period_end
    await sdk.v1.subscriptions.update_async(sub.id, {"cancel_at_period_end": True})
    await stack.settle()
    await _post_and_aggregate(stack, redis, [_call("ending-1", "a", 100, start + 60)])
    await sdk.v1.billing.meter_events.create_async(
        {
            "event_name": "calls",
            "timestamp": start + 60,
            "identifier": "ending-1-a",
            "payload": {"stripe_customer_id": cus, "value": "100"},
        }
    )
    status, doc = await stack.get(f"/v1/customers/{cus}/usage")
    assert status == 200, doc
    # Stripe's final invoice: the period's usage, no fee for a period that will not come.
    await sdk.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": end + 2 * HOUR})
    final = _cycle((await sdk.v1.invoices.list_async({"customer": cus})).data)
    assert final.total == 200
    assert_invoice_equals(doc, final)
    assert doc["invoice"]["renews"] is False


@pytest.mark.parametrize(
    ("behavior", "status"),
    [("void", "void"), ("keep_as_draft", "draft"), ("mark_uncollectible", "uncollectible")],
)
async def test_paused_collection_projects_what_stripe_does_with_the_invoice(
    stack: Stack, redis: Redis, behavior: str, status: str
) -> None:
    sdk = stack.sdk
    cat = await catalog(sdk)
    start = hour_now() - 3 * HOUR
    clock, cus = await clock_customer(sdk, f"paused-{behavior}", start)
    sub = await sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["metered"]}, {"price": cat["basic"]}]}
    )
    end = sub["items"].data[0].current_period_end
    await sdk.v1.subscriptions.update_async(sub.id, {"pause_collection": {"behavior": behavior}})
    await stack.settle()
    answer, doc = await stack.get(f"/v1/customers/{cus}/usage")
    assert answer == 200, doc
    await sdk.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": end + 2 * HOUR})
    invoice = _cycle((await sdk.v1.invoices.list_async({"customer": cus})).data)
    assert (invoice.status, invoice.amount_paid) == (status, 0)
    assert_invoice_equals(doc, invoice)
    projected = doc["invoice"]
    # A voided invoice asks for nothing; a draft or uncollectible one still states its amount.
    assert projected["amount_due"] == (0 if behavior == "void" else invoice.amount_due)
    assert projected["collection"] == {
        "paused": behavior,
        "invoice_status": invoice.status,
        "collected_automatically": False,
    }


async def test_paused_collection_resuming_before_the_invoice_projects_it_collected(
    stack: Stack, redis: Redis
) -> None:
    sdk = stack.sdk
    cat = await catalog(sdk)
    start = hour_now() - 3 * HOUR
    clock, cus = await clock_customer(sdk, "resuming-1", start)
    sub = await sdk.v1.subscriptions.create_async(
        {"customer": cus, "items": [{"price": cat["metered"]}, {"price": cat["basic"]}]}
    )
    end = sub["items"].data[0].current_period_end
    pause = {"behavior": "void", "resumes_at": end - HOUR}
    await sdk.v1.subscriptions.update_async(sub.id, {"pause_collection": pause})
    await stack.settle()
    answer, doc = await stack.get(f"/v1/customers/{cus}/usage")
    assert answer == 200, doc
    await sdk.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": end + 2 * HOUR})
    invoice = _cycle((await sdk.v1.invoices.list_async({"customer": cus})).data)
    assert (invoice.status, invoice.amount_paid) == ("paid", 2000)
    assert_invoice_equals(doc, invoice)
    assert (doc["invoice"]["amount_due"], doc["invoice"]["collection"]) == (2000, None)
