"""Thin events end to end: `meter stripe setup` makes the event destination, Stripe (the
emulator) sends a signed thin notification for usage it rejected, meter fetches the event by id
(`/v2/core/events/{id}`) and records the report where operators see it (`meter_error_reports`,
`meter_billing_meter_error_reports_total`). Oracles: Stripe's documented delivery (a thin event
goes only to an event destination, signed with that destination's secret; its payload has no
`data`) and the rejection rules (an unknown customer or event name is accepted, then reported).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
import stripe
from aiohttp.test_utils import TestClient, TestServer

from meter import appkeys
from meter.app import create_app
from meter.billing.catalogue import parse_text
from meter.billing.service import Billing
from meter.billing.stripe_setup import setup_stripe
from meter.config import Settings
from meter.stripe_emulator.server import RunningEmulator, running_emulator
from meter.stripe_emulator.webhooks import sign

from .conftest import EMULATOR

CATALOGUE = """
meters:
  calls: {display_name: Calls}
products:
  api:
    name: API
    prices:
      calls_monthly: {currency: usd, meter: calls, unit_amount: 2}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class Setup:
    running: RunningEmulator
    client: TestClient[object, object]
    sdk: stripe.StripeClient
    settings: Settings
    url: str
    endpoint_secret: str
    destination_secret: str

    @property
    def billing(self) -> Billing:
        return self.client.app[appkeys.BILLING]

    async def reports(self, n: int) -> list[dict[str, object]]:
        """The error reports meter recorded, once there are `n` (the delivery is async)."""
        for _ in range(500):
            async with self.billing.connection() as conn:
                rows = await conn.fetch("SELECT * FROM meter_error_reports ORDER BY created_at")
            if len(rows) >= n:
                return [dict(r) for r in rows]
            await asyncio.sleep(0.02)
        pytest.fail(f"{n} error reports expected, {len(rows)} recorded")


@pytest.fixture
async def setup(settings: Settings) -> AsyncIterator[Setup]:
    async with running_emulator(EMULATOR) as running:
        url = f"http://127.0.0.1:{_free_port()}/stripe/webhook"
        stripe_settings = settings.replace(
            stripe_api_key=running.api_key,
            stripe_api_base=running.api_base,
            stripe_meter_events_base=running.meter_events_base,
        )
        result = await setup_stripe(stripe_settings, parse_text(CATALOGUE), webhook_url=url)
        assert result.signing_secret is not None
        assert result.destination_secret is not None
        # Both secrets, as docs/configuration.md says: the endpoint's and the destination's.
        app_settings = stripe_settings.replace(
            stripe_webhook_secret=f"{result.signing_secret}, {result.destination_secret}",
            billing_default_tenant="acme",
            billing_stripe_retries=0,
        )
        port = int(url.split(":")[2].split("/")[0])
        client: TestClient[object, object] = TestClient(
            TestServer(create_app(app_settings), port=port)
        )
        await client.start_server()
        try:
            yield Setup(
                running,
                client,
                running.client(),
                app_settings,
                url,
                result.signing_secret,
                result.destination_secret,
            )
        finally:
            await client.close()
            await running.aclose()


async def test_setup_creates_the_event_destination_once(setup: Setup) -> None:
    (destination,) = (
        await setup.sdk.v2.core.event_destinations.list_async({"include": ["webhook_endpoint.url"]})
    ).data
    assert destination.event_payload == "thin"
    assert destination.type == "webhook_endpoint"
    assert destination.webhook_endpoint is not None
    assert destination.webhook_endpoint.url == setup.url
    assert sorted(destination.enabled_events) == [
        "v1.billing.meter.error_report_triggered",
        "v1.billing.meter.no_meter_found",
    ]
    # Stripe redacts the secret after creation.
    assert destination.webhook_endpoint.signing_secret is None

    again = await setup_stripe(setup.settings, parse_text(CATALOGUE), webhook_url=setup.url)

    assert {(c.kind, c.action) for c in again.changes if c.kind == "event destination"} == {
        ("event destination", "unchanged")
    }
    assert again.destination_secret is None
    listed = await setup.sdk.v2.core.event_destinations.list_async()
    assert [d.id for d in listed.data] == [destination.id]


async def test_rejected_usage_reaches_meter_as_an_error_report(setup: Setup) -> None:
    (meter,) = (await setup.sdk.v1.billing.meters.list_async()).data
    # Accepted by Stripe, rejected asynchronously: a customer no one has, an unmetered name.
    await setup.sdk.v1.billing.meter_events.create_async(
        {"event_name": "calls", "payload": {"stripe_customer_id": "cus_nobody", "value": "3"}}
    )
    await setup.sdk.v1.billing.meter_events.create_async(
        {"event_name": "no_such_meter", "payload": {"stripe_customer_id": "cus_x", "value": "1"}}
    )

    rows = await setup.reports(2)

    by_code = {r["error_code"]: r for r in rows}
    assert by_code["meter_event_customer_not_found"]["meter"] == meter.id
    assert by_code["meter_event_customer_not_found"]["error_count"] == 1
    assert by_code["no_meter"]["meter"] is None
    # The notification carried no data: meter read the report from /v2/core/events/{id}.
    fetched = {e["path"] for e in setup.running.emu.state.request_log if e["method"] == "GET"}
    for row in rows:
        assert f"/v2/core/events/{row['event_id']}" in fetched
        report = orjson.loads(str(row["report"]))
        assert report["data"]["reason"]["error_count"] == 1
    destination_deliveries = [
        d for d in setup.running.emu.deliveries if d["type"].startswith("v1.billing.meter.")
    ]
    assert {d["status"] for d in destination_deliveries} == {200}
    assert {d["endpoint"] for d in destination_deliveries} == {
        d.id for d in (await setup.sdk.v2.core.event_destinations.list_async()).data
    }
    metrics = setup.billing.metrics.meter_errors
    assert metrics.labels("meter_event_customer_not_found")._value.get() == 1
    assert metrics.labels("no_meter")._value.get() == 1


async def test_a_thin_notification_with_a_bad_signature_is_refused(setup: Setup) -> None:
    await setup.sdk.v1.billing.meter_events.create_async(
        {"event_name": "calls", "payload": {"stripe_customer_id": "cus_nobody", "value": "3"}}
    )
    (row,) = await setup.reports(1)
    async with setup.billing.connection() as conn:
        await conn.execute("DELETE FROM meter_error_reports")
        await conn.execute("DELETE FROM stripe_events")
    event = await setup.sdk.v2.core.events.retrieve_async(str(row["event_id"]))
    body = orjson.dumps(
        {k: v for k, v in event.to_dict(recursive=True).items() if k not in ("data", "changes")}
    ).decode()
    now = int(time.time())
    headers = {"Content-Type": "application/json"}

    for secret in ("whsec_not_stripes", setup.destination_secret + "x"):
        response = await setup.client.post(
            "/stripe/webhook",
            data=body,
            headers={**headers, "Stripe-Signature": sign(body, secret, now)},
        )
        assert response.status == 400
    async with setup.billing.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM meter_error_reports") == 0
        assert await conn.fetchval("SELECT count(*) FROM stripe_events") == 0

    # The same body signed with the destination's secret is taken.
    response = await setup.client.post(
        "/stripe/webhook",
        data=body,
        headers={**headers, "Stripe-Signature": sign(body, setup.destination_secret, now)},
    )
    assert response.status == 200
    assert (await response.json())["outcome"] == "applied"


async def test_a_failed_fetch_records_nothing_and_the_redelivery_is_applied(setup: Setup) -> None:
    import aiohttp

    # Stripe answers the event read with a 500 once: meter must not answer 2xx then.
    fault = {"path": "/v2/core/events/*", "mode": "error", "status": 500, "count": 1}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{setup.running.api_base}/_emulator/faults", json=fault) as r,
    ):
        assert r.status < 300, await r.text()
    await setup.sdk.v1.billing.meter_events.create_async(
        {"event_name": "calls", "payload": {"stripe_customer_id": "cus_nobody", "value": "3"}}
    )

    (row,) = await setup.reports(1)

    # The report is written while the redelivery is answered: its status is known a moment later.
    for _ in range(500):
        attempts = [
            d["status"]
            for d in setup.running.emu.deliveries
            if d["event"] == row["event_id"] and d["status"] is not None
        ]
        if attempts and attempts[-1] < 500:
            break
        await asyncio.sleep(0.02)
    assert attempts[0] >= 500
    assert attempts[-1] == 200
    assert (
        setup.billing.metrics.meter_errors.labels("meter_event_customer_not_found")._value.get()
        == 1
    )


async def test_a_redelivered_notification_is_not_fetched_again(setup: Setup) -> None:
    await setup.sdk.v1.billing.meter_events.create_async(
        {"event_name": "calls", "payload": {"stripe_customer_id": "cus_nobody", "value": "3"}}
    )
    (row,) = await setup.reports(1)
    event = await setup.sdk.v2.core.events.retrieve_async(str(row["event_id"]))
    body = orjson.dumps(
        {k: v for k, v in event.to_dict(recursive=True).items() if k not in ("data", "changes")}
    ).decode()
    setup.running.emu.state.request_log.clear()

    response = await setup.client.post(
        "/stripe/webhook",
        data=body,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": sign(body, setup.destination_secret, int(time.time())),
        },
    )

    assert (await response.json())["outcome"] == "duplicate"
    assert [e["path"] for e in setup.running.emu.state.request_log] == []
