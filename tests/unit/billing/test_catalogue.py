"""The catalogue file's checks: every problem at once, each with its place; and what changes
the entitlement metadata of an existing Stripe object."""

from __future__ import annotations

from pathlib import Path

import pytest

from meter.billing.catalogue import CatalogueError, load, metadata_update, parse_text

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "catalogue.example.yaml"


def test_the_shipped_example_is_a_catalogue() -> None:
    catalogue = load(EXAMPLE)
    assert [m.event_name for m in catalogue.meters] == ["api_calls"]
    assert catalogue.webhook_url == "https://billing.example.com/stripe/webhook"
    first = catalogue.prices()[0][1]
    # `meter dev` subscribes its demo customer to it; tests/e2e/test_dev.py prices its usage.
    assert (first.lookup_key, first.tiers_mode, first.meter) == (
        "api_starter_monthly",
        "graduated",
        "api_calls",
    )


def problems(text: str) -> list[str]:
    with pytest.raises(CatalogueError) as err:
        parse_text(text)
    return err.value.problems


def test_every_problem_is_named_with_its_place() -> None:
    found = problems(
        """
meters:
  calls: {formula: count}
  tokens: {display_nam: Tokens}
products:
  api:
    prices:
      both: {currency: usd, unit_amount: 1, tiers_mode: graduated, tiers: [{up_to: "inf"}]}
      open_end: {currency: usd, tiers_mode: volume, tiers: [{up_to: 10, unit_amount: 1}]}
      nowhere: {currency: usd, meter: nope, unit_amount: 1}
      negative: {currency: usd, unit_amount: -1}
      nocurrency: {unit_amount: 1}
      weekly: {currency: usd, interval: fortnight, unit_amount: 1}
      reserved: {currency: usd, unit_amount: 1, metadata: {limit.calls: 3}}
      packaged:
        {currency: usd, tiers_mode: volume, tiers: [{up_to: "inf"}], package: {divide_by: 0}}
  other:
    prices:
      both: {currency: usd, unit_amount: 2}
shipping: yes
"""
    )
    expected = [
        "meters.calls.formula: 'count' is not one meter reports to",
        "meters.tokens: unknown field 'display_nam'",
        "products.api.prices.both: give unit_amount or tiers, not both",
        'products.api.prices.open_end.tiers[0].up_to: the last tier goes up to "inf"',
        "products.api.prices.nowhere.meter: 'nope' is not under `meters`",
        "products.api.prices.negative.unit_amount: must be a non-negative number",
        "products.api.prices.nocurrency.currency: is required",
        "products.api.prices.weekly.interval: one of day, week, month, year",
        "products.api.prices.reserved.metadata.limit.calls: is set by the catalogue",
        "products.api.prices.packaged.package.divide_by: must be a whole number",
        "products.api.prices.packaged.package: cannot be combined with tiers",
        "products.other.prices.both: lookup key also used under products.api",
        "catalogue: unknown field 'shipping'",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in found), (line, found)
    assert len(found) == len(expected), found


def test_a_key_given_twice_is_refused() -> None:
    (problem,) = problems("meters:\n  calls: {}\n  calls: {formula: last}\n")
    assert "'calls' is given twice" in problem


def test_tiers_go_up() -> None:
    (problem,) = problems(
        """
products:
  api:
    prices:
      p:
        currency: usd
        tiers_mode: graduated
        tiers: [{up_to: 10, unit_amount: 1}, {up_to: 5, unit_amount: 1}, {up_to: "inf"}]
"""
    )
    assert problem.startswith("products.api.prices.p.tiers[1].up_to: tiers go up")


def test_amounts_beyond_stripes_twelve_decimals_are_refused() -> None:
    (problem,) = problems(
        'products: {a: {prices: {p: {currency: usd, unit_amount: "0.0000000000001"}}}}'
    )
    assert "at most 12 decimal places" in problem


def test_entitlements_become_the_metadata_billing_reads() -> None:
    catalogue = parse_text(
        """
products:
  api:
    features: [api, export]
    limits: {calls: 1000, tokens: "2.5"}
    metadata: {team: growth}
"""
    )
    assert dict(catalogue.products[0].metadata) == {
        "features": "api,export",
        "limit.calls": "1000",
        "limit.tokens": "2.5",
        "team": "growth",
        "meter_product": "api",
    }


def test_metadata_update_unsets_only_the_entitlements_the_catalogue_no_longer_gives() -> None:
    have = {"features": "a", "limit.calls": "5", "limit.old": "1", "team": "growth"}
    want = {"features": "a,b", "limit.calls": "5"}
    assert metadata_update(have, want) == {"features": "a,b", "limit.old": ""}
    assert metadata_update(want, want) == {}


def test_the_endpoint_events_are_ones_stripe_lets_a_webhook_endpoint_subscribe_to() -> None:
    """The oracle is Stripe's own API description, as the SDK's typed params carry it: every
    type the endpoint asks for is in `enabled_events`' list, and the thin one is not."""
    import typing

    from stripe.params import WebhookEndpointCreateParams

    from meter.billing.stripe_setup import thin_events, webhook_events

    (literal,) = typing.get_args(WebhookEndpointCreateParams.__annotations__["enabled_events"])
    accepted = set(typing.get_args(literal))
    assert set(webhook_events()) <= accepted
    assert thin_events() == [
        "v1.billing.meter.error_report_triggered",
        "v1.billing.meter.no_meter_found",
    ]
    assert not set(thin_events()) & accepted
