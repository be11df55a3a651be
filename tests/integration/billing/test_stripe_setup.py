"""`meter stripe setup`: a catalogue file made real in (emulated) Stripe, read back through the
official SDK. The oracles are Stripe's documented rules (one price per lookup key, prices
immutable, the signing secret shown only at creation) and the emulator's request log (a run that
changes nothing sends no write)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stripe

from meter.billing.catalogue import parse_text, price_params
from meter.billing.stripe_events import HANDLERS
from meter.billing.stripe_setup import setup_stripe
from meter.config import Settings
from meter.errors import ConfigError
from meter.stripe_emulator.server import RunningEmulator, running_emulator
from tests.e2e.test_cli import METER

URL = "https://billing.example.com/stripe/webhook"
REPO = Path(__file__).resolve().parents[3]

CATALOGUE = """
meters:
  api_calls: {display_name: API calls}
  seats_peak: {formula: last}
products:
  api:
    name: API
    features: [api, export]
    limits: {api_calls: 5000}
    prices:
      api_graduated:
        currency: usd
        meter: api_calls
        tiers_mode: graduated
        tiers:
          - {up_to: 1000, unit_amount: 1, flat_amount: 500}
          - {up_to: "inf", unit_amount: "0.25"}
      api_volume:
        currency: usd
        interval: year
        meter: api_calls
        tiers_mode: volume
        tiers:
          - {up_to: 100, unit_amount: 3}
          - {up_to: "inf", unit_amount: 2}
      api_package:
        currency: usd
        meter: api_calls
        unit_amount: 100
        package: {divide_by: 1000, round: up}
      api_per_unit:
        nickname: Per call
        currency: usd
        meter: api_calls
        unit_amount: "0.35"
  seats:
    name: Seats
    prices:
      seats_monthly: {currency: usd, unit_amount: 900, limits: {seats_peak: 10}}
      seats_peak_monthly: {currency: usd, meter: seats_peak, unit_amount: 700}
webhook:
  url: https://billing.example.com/stripe/webhook
"""


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with running_emulator() as running:
        yield running
        await running.aclose()


def _settings(running: RunningEmulator, api_key: str | None = None) -> Settings:
    return Settings(
        stripe_api_key=api_key or running.api_key,
        stripe_api_base=running.api_base,
        stripe_meter_events_base=running.meter_events_base,
    )


def _writes(running: RunningEmulator) -> list[str]:
    return [
        f"{e['method']} {e['path']}"
        for e in running.emu.state.request_log
        if e["method"] not in ("GET", "HEAD")
    ]


async def _price(sdk: stripe.StripeClient, lookup_key: str) -> Any:
    found = await sdk.v1.prices.list_async({"lookup_keys": [lookup_key], "expand": ["data.tiers"]})
    assert len(found.data) == 1, lookup_key
    return found.data[0]


async def test_setup_creates_the_whole_catalogue(emulator: RunningEmulator) -> None:
    result = await setup_stripe(_settings(emulator), parse_text(CATALOGUE))

    assert {(c.kind, c.name, c.action) for c in result.changes} == {
        ("meter", "api_calls", "created"),
        ("meter", "seats_peak", "created"),
        ("product", "api", "created"),
        ("product", "seats", "created"),
        *{
            ("price", key, "created")
            for key in (
                "api_graduated",
                "api_volume",
                "api_package",
                "api_per_unit",
                "seats_monthly",
                "seats_peak_monthly",
            )
        },
        ("webhook endpoint", URL, "created"),
        ("event destination", URL, "created"),
    }
    sdk = emulator.client()
    meters = {m.event_name: m for m in (await sdk.v1.billing.meters.list_async()).data}
    assert meters["api_calls"].display_name == "API calls"
    assert meters["api_calls"].default_aggregation.formula == "sum"
    assert meters["seats_peak"].default_aggregation.formula == "last"
    products = {p.metadata["meter_product"]: p for p in (await sdk.v1.products.list_async()).data}
    assert products["api"].name == "API"
    assert products["api"].metadata.to_dict() == {
        "meter_product": "api",
        "features": "api,export",
        "limit.api_calls": "5000",
    }

    graduated = await _price(sdk, "api_graduated")
    assert graduated.product == products["api"].id
    assert graduated.currency == "usd"
    assert graduated.recurring is not None
    assert graduated.recurring.usage_type == "metered"
    assert graduated.recurring.meter == meters["api_calls"].id
    assert graduated.recurring.interval == "month"
    assert (graduated.billing_scheme, graduated.tiers_mode) == ("tiered", "graduated")
    assert [(t.up_to, Decimal(t.unit_amount_decimal), t.flat_amount) for t in graduated.tiers] == [
        (1000, Decimal(1), 500),
        (None, Decimal("0.25"), None),
    ]
    volume = await _price(sdk, "api_volume")
    assert volume.tiers_mode == "volume"
    assert volume.recurring is not None
    assert volume.recurring.interval == "year"
    package = await _price(sdk, "api_package")
    assert package.transform_quantity is not None
    assert (package.transform_quantity.divide_by, package.transform_quantity.round) == (1000, "up")
    assert package.unit_amount == 100
    per_unit = await _price(sdk, "api_per_unit")
    assert per_unit.unit_amount_decimal == Decimal("0.35")
    assert per_unit.nickname == "Per call"
    seats = await _price(sdk, "seats_monthly")
    assert seats.recurring is not None
    assert seats.recurring.usage_type == "licensed"
    assert seats.unit_amount == 900
    assert seats.metadata.to_dict() == {"limit.seats_peak": "10", "meter_price": "seats_monthly"}

    (endpoint,) = (await sdk.v1.webhook_endpoints.list_async()).data
    assert endpoint.url == URL
    assert endpoint.api_version == stripe.api_version
    # Stripe shows the secret only in the create answer: setup hands that one back.
    assert result.signing_secret is not None
    assert result.signing_secret.startswith("whsec_")


async def test_the_endpoint_subscribes_to_exactly_the_events_billing_handles(
    emulator: RunningEmulator,
) -> None:
    await setup_stripe(_settings(emulator), parse_text(CATALOGUE))
    (endpoint,) = (await emulator.client().v1.webhook_endpoints.list_async()).data
    # Every handled type but the thin meter error reports, which Stripe sends to event
    # destinations.
    assert set(endpoint.enabled_events) == set(HANDLERS) - {
        "v1.billing.meter.error_report_triggered",
        "v1.billing.meter.no_meter_found",
    }
    assert "checkout.session.completed" in endpoint.enabled_events


async def test_a_second_run_changes_nothing(emulator: RunningEmulator) -> None:
    catalogue = parse_text(CATALOGUE)
    await setup_stripe(_settings(emulator), catalogue)
    emulator.emu.state.request_log.clear()

    again = await setup_stripe(_settings(emulator), catalogue)

    assert _writes(emulator) == []
    assert {c.action for c in again.changes} == {"unchanged"}
    assert not again.changed
    assert again.signing_secret is None
    assert again.conflicts == []


async def test_a_changed_amount_makes_a_new_price_that_takes_the_lookup_key(
    emulator: RunningEmulator,
) -> None:
    settings = _settings(emulator)
    await setup_stripe(settings, parse_text(CATALOGUE))
    sdk = emulator.client()
    old = await _price(sdk, "api_per_unit")
    customer = await sdk.v1.customers.create_async({"email": "a@example.com"})
    subscription = await sdk.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": old.id}]}
    )

    changed = CATALOGUE.replace('unit_amount: "0.35"', 'unit_amount: "0.4"')
    result = await setup_stripe(settings, parse_text(changed))

    new = await _price(sdk, "api_per_unit")
    assert new.id != old.id
    assert new.unit_amount_decimal == Decimal("0.4")
    assert new.active
    archived = await sdk.v1.prices.retrieve_async(old.id)
    assert archived.lookup_key is None
    assert not archived.active
    assert archived.unit_amount_decimal == Decimal(
        "0.35"
    )  # prices are immutable: the old one is kept
    kept = await sdk.v1.subscriptions.retrieve_async(subscription.id)
    assert kept["items"].data[0].price.id == old.id
    (change,) = [c for c in result.changes if c.action != "unchanged"]
    assert (change.kind, change.name, change.action, change.id) == (
        "price",
        "api_per_unit",
        "replaced",
        new.id,
    )
    # And once more: the new price matches, nothing is written.
    emulator.emu.state.request_log.clear()
    await setup_stripe(settings, parse_text(changed))
    assert _writes(emulator) == []


async def test_a_run_stopped_between_replacing_and_archiving_is_finished_by_the_next(
    emulator: RunningEmulator,
) -> None:
    settings = _settings(emulator)
    await setup_stripe(settings, parse_text(CATALOGUE))
    sdk = emulator.client()
    old = await _price(sdk, "api_per_unit")
    changed = parse_text(CATALOGUE.replace('unit_amount: "0.35"', 'unit_amount: "0.4"'))
    # The first half of a replacement, as setup sends it, then the "crash": no archive.
    [spec] = [p for _, p in changed.prices() if p.lookup_key == "api_per_unit"]
    meter_id = old.recurring.meter if old.recurring is not None else None
    params: Any = {**price_params(spec, old.product, meter_id), "transfer_lookup_key": True}
    new = await sdk.v1.prices.create_async(params)
    assert (await sdk.v1.prices.retrieve_async(old.id)).active  # the state the crash left

    result = await setup_stripe(settings, changed)

    stranded = await sdk.v1.prices.retrieve_async(old.id)
    assert not stranded.active
    assert stranded.lookup_key is None
    assert (await _price(sdk, "api_per_unit")).id == new.id
    product_prices = await sdk.v1.prices.list_async({"product": old.product, "active": True})
    assert sorted(str(p.lookup_key) for p in product_prices.data) == [
        "api_graduated",
        "api_package",
        "api_per_unit",
        "api_volume",
    ]
    assert [(c.name, c.action, c.id) for c in result.changes if c.action != "unchanged"] == [
        ("api_per_unit", "archived", old.id)
    ]
    # Converged: one more run writes nothing.
    emulator.emu.state.request_log.clear()
    await setup_stripe(settings, changed)
    assert _writes(emulator) == []


async def test_mutable_fields_are_updated_in_place(emulator: RunningEmulator) -> None:
    settings = _settings(emulator)
    await setup_stripe(settings, parse_text(CATALOGUE))
    sdk = emulator.client()
    before = await _price(sdk, "api_per_unit")

    edited = (
        CATALOGUE.replace("nickname: Per call", "nickname: Per API call")
        .replace("limits: {api_calls: 5000}", "")
        .replace("api_calls: {display_name: API calls}", "api_calls: {display_name: Calls}")
    )
    result = await setup_stripe(settings, parse_text(edited))

    after = await _price(sdk, "api_per_unit")
    assert after.id == before.id
    assert after.nickname == "Per API call"
    products = {p.metadata["meter_product"]: p for p in (await sdk.v1.products.list_async()).data}
    # A limit taken out of the catalogue is taken out of Stripe (entitlements read it).
    assert "limit.api_calls" not in products["api"].metadata
    meters = {m.event_name: m for m in (await sdk.v1.billing.meters.list_async()).data}
    assert meters["api_calls"].display_name == "Calls"
    assert {(c.kind, c.name) for c in result.changes if c.action == "updated"} == {
        ("price", "api_per_unit"),
        ("product", "api"),
        ("meter", "api_calls"),
    }


async def test_a_meter_formula_stripe_cannot_change_is_a_conflict(
    emulator: RunningEmulator,
) -> None:
    settings = _settings(emulator)
    await setup_stripe(settings, parse_text(CATALOGUE))
    flipped = CATALOGUE.replace("seats_peak: {formula: last}", "seats_peak: {formula: sum}")

    result = await setup_stripe(settings, parse_text(flipped))

    assert len(result.conflicts) == 1
    assert "seats_peak" in result.conflicts[0]
    meters = (await emulator.client().v1.billing.meters.list_async()).data
    assert [m.default_aggregation.formula for m in meters if m.event_name == "seats_peak"] == [
        "last"
    ]


async def test_a_dry_run_writes_nothing_and_says_what_a_run_does(
    emulator: RunningEmulator,
) -> None:
    settings = _settings(emulator)
    await setup_stripe(settings, parse_text(CATALOGUE))
    edited = (
        CATALOGUE.replace('unit_amount: "0.35"', 'unit_amount: "0.4"')
        .replace("nickname: Per call", "nickname: Per call\n        features: [bulk]")
        .replace(
            "  seats:\n",
            "  extra:\n    prices:\n      extra_monthly: {currency: eur, unit_amount: 5}\n"
            "  seats:\n",
        )
    )
    emulator.emu.state.request_log.clear()

    planned = await setup_stripe(settings, parse_text(edited), dry_run=True)

    assert _writes(emulator) == []
    done = await setup_stripe(settings, parse_text(edited))
    assert [(c.kind, c.name, c.action) for c in planned.changes] == [
        (c.kind, c.name, c.action) for c in done.changes
    ]
    assert {c.action for c in done.changes} == {"unchanged", "created", "replaced"}


async def test_a_live_key_is_refused_without_live(emulator: RunningEmulator) -> None:
    with pytest.raises(ConfigError, match="--live"):
        await setup_stripe(_settings(emulator, "sk_live_abc"), parse_text(CATALOGUE))
    with pytest.raises(ConfigError, match="--live"):
        await setup_stripe(_settings(emulator, "rk_live_abc"), parse_text(CATALOGUE))
    assert emulator.emu.state.request_log == []


async def _meter(emulator: RunningEmulator, *args: str, api_key: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "STRIPE_API_KEY": api_key,
        "STRIPE_API_BASE": emulator.api_base,
        "STRIPE_METER_EVENTS_BASE": emulator.meter_events_base,
    }
    proc = await asyncio.create_subprocess_exec(
        METER, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_command_refuses_a_live_key_and_sets_up_the_shipped_example(
    emulator: RunningEmulator,
) -> None:
    example = str(REPO / "deploy" / "catalogue.example.yaml")
    code, _, err = await _meter(emulator, "stripe", "setup", example, api_key="sk_live_x")
    assert code == 2
    assert "--live" in err
    assert emulator.emu.state.request_log == []

    url = "https://meter.example.org/stripe/webhook"
    code, out, err = await _meter(
        emulator, "stripe", "setup", example, "--webhook-url", url, api_key=emulator.api_key
    )
    assert code == 0, err
    (endpoint,) = emulator.emu.state.all("webhook_endpoint")
    assert endpoint["url"] == url
    (destination,) = emulator.emu.state.all("v2.core.event_destination")
    # Both secrets, ready for STRIPE_WEBHOOK_SECRET.
    assert f"{endpoint['secret']},{destination['_secret']}" in out

    code, out, _ = await _meter(emulator, "stripe", "setup", example, api_key=emulator.api_key)
    assert code == 0
    assert "nothing changed" not in out  # the file's own URL: a second endpoint
    code, out, _ = await _meter(emulator, "stripe", "setup", example, api_key=emulator.api_key)
    assert "nothing changed" in out
    assert "whsec_" not in out


async def test_the_command_with_dry_run_writes_nothing(emulator: RunningEmulator) -> None:
    example = str(REPO / "deploy" / "catalogue.example.yaml")
    code, out, err = await _meter(
        emulator, "stripe", "setup", example, "--dry-run", api_key=emulator.api_key
    )
    assert code == 0, err
    assert "created" in out
    assert _writes(emulator) == []
