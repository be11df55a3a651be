"""Wire behaviour through the SDK: auth, errors, Stripe-Version, idempotency, lists, expand."""

from __future__ import annotations

import pytest
import requests
import stripe

from meter.stripe_emulator.server import ClientPool

from .conftest import Env


def test_auth(env: Env, pool: ClientPool) -> None:
    with pytest.raises(stripe.AuthenticationError) as bad:
        pool.client(api_key="sk_live_nope").v1.customers.list()
    assert bad.value.http_status == 401
    response = requests.get(env.running.api_base + "/v1/customers", timeout=5)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_version_echo_and_unknown_url(env: Env, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"email": "a@example.com"})
    response = customer.last_response
    assert response is not None
    assert response.headers["Stripe-Version"] == stripe.api_version
    assert response.headers["Request-Id"].startswith("req_")
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.raw_request("get", "/v1/nothing_here")
    assert exc.value.http_status == 404


def test_idempotent_replay_and_mismatch(env: Env, client: stripe.StripeClient) -> None:
    first = client.v1.customers.create({"email": "a@example.com"}, {"idempotency_key": "k-1"})
    again = client.v1.customers.create({"email": "a@example.com"}, {"idempotency_key": "k-1"})
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(client.v1.customers.list().data) == 1
    with pytest.raises(stripe.IdempotencyError) as exc:
        client.v1.customers.create({"email": "b@example.com"}, {"idempotency_key": "k-1"})
    assert exc.value.http_status == 400
    log = env.control("GET", "/requests", {"path": "/v1/customers"})["data"]
    log = [e for e in log if e["method"] == "POST"]
    assert [e["outcome"] for e in log] == ["ok", "replayed", "error"]
    assert log[0]["idempotency_key"] == "k-1"
    assert log[0]["params"] == {"email": "a@example.com"}


def test_customer_crud_list_pagination_expand(client: stripe.StripeClient) -> None:
    ids = [
        client.v1.customers.create({"email": f"c{i}@example.com", "metadata": {"n": str(i)}}).id
        for i in range(5)
    ]
    page = client.v1.customers.list({"limit": 2})
    assert [c.id for c in page.data] == ids[::-1][:2]
    assert page.has_more
    assert [c.id for c in page.auto_paging_iter()] == ids[::-1]
    updated = client.v1.customers.update(ids[0], {"name": "Ada", "metadata": {"n": ""}})
    assert updated.name == "Ada"
    assert "n" not in updated.metadata
    found = client.v1.customers.search({"query": "metadata['n']:'3'"})
    assert [c.id for c in found.data] == [ids[3]]
    gone = client.v1.customers.delete(ids[1])
    assert gone.deleted is True
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.update(ids[1], {"name": "x"})
    assert exc.value.code == "resource_missing"
    assert exc.value.http_status == 404
    product = client.v1.products.create({"name": "Pro"})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1000,
            "recurring": {"interval": "month"},
            "expand": ["product"],
        }
    )
    assert price.product.name == "Pro"  # type: ignore[union-attr]
    listed = client.v1.prices.list({"expand": ["data.product"]})
    assert listed.data[0].product.id == product.id  # type: ignore[union-attr]


def test_param_errors(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create({"currency": "usd", "unit_amount": 5})  # type: ignore[typeddict-item]
    assert exc.value.code == "parameter_missing"
    assert exc.value.param == "product"
