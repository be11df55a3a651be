"""Prices' lookup keys and webhook endpoints' event types, as Stripe's API reference has them:
a lookup key names one price, moved only by `transfer_lookup_key`; a v1 webhook endpoint takes
Stripe's snapshot event types, never thin ones."""

from __future__ import annotations

from typing import Any

import pytest
import stripe


def _price(client: stripe.StripeClient, product: str, amount: int, **extra: Any) -> Any:
    params: Any = {"product": product, "currency": "usd", "unit_amount": amount, **extra}
    return client.v1.prices.create(params)


def test_a_lookup_key_names_one_price_and_moves_only_when_transferred(
    client: stripe.StripeClient,
) -> None:
    product = client.v1.products.create({"name": "API"})
    first = _price(client, product.id, 100, lookup_key="pro")

    with pytest.raises(stripe.InvalidRequestError) as refused:
        _price(client, product.id, 200, lookup_key="pro")
    assert refused.value.param == "lookup_key"
    assert first.id in str(refused.value)
    # An archived price keeps its key, and still holds it.
    client.v1.prices.update(first.id, {"active": False})
    with pytest.raises(stripe.InvalidRequestError):
        _price(client, product.id, 200, lookup_key="pro")

    second = _price(client, product.id, 200, lookup_key="pro", transfer_lookup_key=True)

    found = client.v1.prices.list({"lookup_keys": ["pro"]}).data
    assert [p.id for p in found] == [second.id]
    assert client.v1.prices.retrieve(first.id).lookup_key is None


def test_an_update_takes_a_lookup_key_over_only_when_transferred(
    client: stripe.StripeClient,
) -> None:
    product = client.v1.products.create({"name": "API"})
    first = _price(client, product.id, 100, lookup_key="basic")
    second = _price(client, product.id, 200)

    with pytest.raises(stripe.InvalidRequestError):
        client.v1.prices.update(second.id, {"lookup_key": "basic"})
    client.v1.prices.update(second.id, {"lookup_key": "basic", "transfer_lookup_key": True})

    assert client.v1.prices.retrieve(second.id).lookup_key == "basic"
    assert client.v1.prices.retrieve(first.id).lookup_key is None
    # Setting a price's own key again is no conflict.
    client.v1.prices.update(second.id, {"lookup_key": "basic"})


def test_a_webhook_endpoint_takes_no_thin_event(client: stripe.StripeClient) -> None:
    thin = "v1.billing.meter.error_report_triggered"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.webhook_endpoints.create(
            {"url": "https://example.com/hook", "enabled_events": ["invoice.paid", thin]}
        )
    assert refused.value.param == "enabled_events[1]"
    endpoint = client.v1.webhook_endpoints.create(
        {"url": "https://example.com/hook", "enabled_events": ["invoice.paid"]}
    )
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.webhook_endpoints.update(endpoint.id, {"enabled_events": [thin]})
    assert client.v1.webhook_endpoints.list().data[0].enabled_events == ["invoice.paid"]


def test_a_webhook_endpoint_takes_only_stripes_event_types(client: stripe.StripeClient) -> None:
    # Stripe has no `invoiceitem.updated` (the API's `enabled_events` list).
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.webhook_endpoints.create(
            {"url": "https://example.com/hook", "enabled_events": ["invoiceitem.updated"]}
        )
    assert refused.value.param == "enabled_events[0]"
    events = ["*", "invoiceitem.created", "billing.meter.deactivated"]
    for event in events:
        client.v1.webhook_endpoints.create(
            {"url": "https://example.com/hook", "enabled_events": [event]}
        )
