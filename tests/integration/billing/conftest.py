"""Billing against the Stripe emulator (in this loop) and real Postgres/Redis: the meter app
serves `/stripe/webhook`, and the emulator delivers every event to it, signed, over HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import stripe
from aiohttp.test_utils import TestClient

from meter import appkeys
from meter.billing.routes import run_jobs
from meter.billing.service import Billing
from meter.config import Settings
from meter.stripe_emulator import EmulatorConfig
from meter.stripe_emulator.core import Emulator
from meter.stripe_emulator.server import RunningEmulator, running_emulator
from tests.conftest import start_client

SECRET = "whsec_test_meter_billing"
TENANT = "acme"

Client = TestClient[object, object]


@dataclass
class Stack:
    running: RunningEmulator
    client: Client
    sdk: stripe.StripeClient
    settings: Settings
    api_key: str

    @property
    def emu(self) -> Emulator:
        return self.running.emu

    @property
    def billing(self) -> Billing:
        return self.client.app[appkeys.BILLING]  # type: ignore[index]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def get(self, path: str) -> tuple[int, Any]:
        response = await self.client.get(path, headers=self.auth)
        return response.status, await response.json()

    async def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        response = await self.client.post(path, json=body or {}, headers=self.auth)
        return response.status, await response.json()

    async def settle(self, limit_s: float = 20.0) -> None:
        """Wait until every event the emulator emitted was answered 2xx by the app."""
        deadline = time.monotonic() + limit_s
        while True:
            events = {e["id"] for e in self.emu.state.all("event")}
            ok = {
                d["event"]
                for d in self.emu.deliveries
                if d["status"] is not None and 200 <= d["status"] < 300
            }
            if events <= ok and (self.emu.outbox is None or self.emu.outbox.empty()):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"webhooks not delivered in time: {sorted(events - ok)[:5]}")
            await asyncio.sleep(0.02)

    async def jobs(self, now: int) -> None:
        await run_jobs(self.billing, now)

    def payments(self, customer: str, outcome: str) -> None:
        self.emu.state.payment_outcomes[customer] = outcome

    async def complete_checkout(self, session_id: str) -> None:
        import aiohttp

        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{self.running.api_base}/_emulator/checkout/sessions/{session_id}/complete"
            ) as r,
        ):
            assert r.status == 200, await r.text()


EMULATOR = EmulatorConfig(
    port=0,
    meter_events_port=0,
    webhook_retry_base=0.05,
    webhook_max_attempts=10,
    tick_seconds=0.2,
    fault_seed=7,
)


async def make_stack(settings: Settings, api_key: str, **emulator: Any) -> AsyncIterator[Stack]:
    config = dataclasses.replace(EMULATOR, **emulator)
    async with running_emulator(config) as running:
        app_settings = settings.replace(
            stripe_api_key=running.api_key,
            stripe_webhook_secret=SECRET,
            stripe_api_base=running.api_base,
            stripe_meter_events_base=running.meter_events_base,
            billing_default_tenant=TENANT,
            billing_job_interval_s=0.0,
            billing_stripe_retries=0,
            # Billing tests call the Stripe routes in quick succession; the per-tenant limit has
            # its own test (tests/integration/security/test_unknown_keys.py).
            billing_rate_limit=0.0,
        )
        client = await start_client(app_settings)
        try:
            # The app's URL is known only now; the emulator reads its config at each delivery.
            running.emu.config = dataclasses.replace(
                running.emu.config,
                webhook_url=str(client.make_url("/stripe/webhook")),
                webhook_secret=SECRET,
            )
            yield Stack(running, client, running.client(), app_settings, api_key)
        finally:
            await client.close()


@pytest.fixture
async def stack(settings: Settings, api_key: str) -> AsyncIterator[Stack]:
    async for s in make_stack(settings, api_key):
        yield s


def hour_now() -> int:
    return int(time.time()) // 3600 * 3600


async def catalog(sdk: stripe.StripeClient, *, interval: str = "month") -> dict[str, Any]:
    """A metered price on a `calls` meter, and two licensed plans (basic 20.00, pro 50.00)."""
    meter = await sdk.v1.billing.meters.create_async(
        {"display_name": "Calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )
    product = await sdk.v1.products.create_async(
        {"name": "Pro", "metadata": {"features": "sso,export", "limit.calls": "1000"}}
    )
    metered = await sdk.v1.prices.create_async(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 2,
            "recurring": {"interval": interval, "usage_type": "metered", "meter": meter.id},
        }
    )
    basic = await sdk.v1.prices.create_async(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 2000,
            "recurring": {"interval": interval},
        }
    )
    pro = await sdk.v1.prices.create_async(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 5000,
            "recurring": {"interval": interval},
            "metadata": {"features": "audit"},
        }
    )
    return {"meter": meter.id, "metered": metered.id, "basic": basic.id, "pro": pro.id}


async def clock_customer(sdk: stripe.StripeClient, external_id: str, start: int) -> tuple[str, str]:
    """A Stripe customer on a test clock, linked to our id through metadata."""
    clock = await sdk.v1.test_helpers.test_clocks.create_async({"frozen_time": start})
    cus = await sdk.v1.customers.create_async(
        {
            "email": f"{external_id}@example.com",
            "test_clock": clock.id,
            "metadata": {"meter_customer": external_id, "meter_tenant": TENANT},
        }
    )
    return clock.id, cus.id
