"""Every fault mode, seen through the SDK as a client would see a misbehaving Stripe."""

from __future__ import annotations

import time

import pytest
import stripe

from meter.stripe_emulator.server import ClientPool

from .conftest import Env

EVENT = {"event_name": "calls", "payload": {"stripe_customer_id": "cus_x", "value": "1"}}


@pytest.fixture
def meter(client: stripe.StripeClient) -> None:
    client.v1.billing.meters.create(
        {"display_name": "c", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )


@pytest.mark.usefixtures("meter")
def test_rate_limit_for_next_n(env: Env, client: stripe.StripeClient) -> None:
    env.control(
        "POST", "/faults", {"path": "/v1/billing/meter_events", "mode": "rate_limit", "count": 2}
    )
    for ident in ("a", "b"):
        with pytest.raises(stripe.RateLimitError) as exc:
            client.v1.billing.meter_events.create({**EVENT, "identifier": ident})
        assert exc.value.http_status == 429
        assert exc.value.json_body is not None
        assert exc.value.json_body["error"]["code"] == "rate_limit"
    client.v1.billing.meter_events.create({**EVENT, "identifier": "c"})
    outcomes = [
        e["outcome"] for e in env.control("GET", "/requests", {"path": "*/meter_events"})["data"]
    ]
    assert outcomes == ["fault:rate_limit", "fault:rate_limit", "ok"]


def test_rate_limit_on_v2_stream(env: Env, client: stripe.StripeClient, pool: ClientPool) -> None:
    token = client.v2.billing.meter_event_session.create().authentication_token
    env.control("POST", "/faults", {"path": "/v2/billing/meter_event_stream", "mode": "rate_limit"})
    with pytest.raises(stripe.RateLimitError):
        pool.client(api_key=token).v2.billing.meter_event_stream.create({"events": [EVENT]})


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_by_the_sdk(env: Env, pool: ClientPool, status: int) -> None:
    env.control("POST", "/faults", {"path": "/v1/customers", "mode": "error", "status": status})
    with pytest.raises(stripe.APIError) as exc:
        pool.client().v1.customers.create({"email": "a@example.com"})
    assert exc.value.http_status == status
    env.control("POST", "/faults", {"path": "/v1/customers", "mode": "error", "status": status})
    retrying = pool.client(max_network_retries=1)
    customer = retrying.v1.customers.create({"email": "a@example.com"})
    assert customer.id.startswith("cus_")


@pytest.mark.usefixtures("meter")
def test_drop_applies_then_closes_and_replay_answers(env: Env, client: stripe.StripeClient) -> None:
    env.control("POST", "/faults", {"path": "/v1/billing/meter_events", "mode": "drop"})
    options: stripe.RequestOptions = {"idempotency_key": "drop-1"}
    with pytest.raises(stripe.APIConnectionError):
        client.v1.billing.meter_events.create({**EVENT, "identifier": "d1"}, options)
    # Applied: the identifier is taken; a retry with the same key replays the lost answer.
    replay = client.v1.billing.meter_events.create({**EVENT, "identifier": "d1"}, options)
    assert replay.identifier == "d1"
    assert replay.last_response is not None
    assert replay.last_response.headers["Idempotent-Replayed"] == "true"
    log = env.control("GET", "/requests", {"path": "*/meter_events"})["data"]
    assert [e["outcome"] for e in log] == ["dropped", "replayed"]


def test_timeout_and_latency(env: Env, pool: ClientPool) -> None:
    env.control("POST", "/faults", {"path": "/v1/customers", "mode": "timeout", "delay": 0.5})
    with pytest.raises(stripe.APIConnectionError):
        pool.client(timeout=0.1).v1.customers.list()
    env.control("POST", "/faults", {"path": "/v1/customers", "mode": "latency", "delay": 0.05})
    assert pool.client().v1.customers.list().data == []
    outcomes = [e["outcome"] for e in env.control("GET", "/requests")["data"]]
    assert outcomes[-1] == "ok"
    assert "fault:timeout" in outcomes


@pytest.mark.usefixtures("meter")
def test_a_timed_out_request_stays_a_timeout_when_its_retry_answers_first(
    env: Env, client: stripe.StripeClient, pool: ClientPool
) -> None:
    env.control(
        "POST", "/faults", {"path": "/v1/billing/meter_events", "mode": "timeout", "delay": 0.6}
    )
    options: stripe.RequestOptions = {"idempotency_key": "slow-1"}
    with pytest.raises(stripe.APIConnectionError):
        pool.client(timeout=0.1).v1.billing.meter_events.create(
            {**EVENT, "identifier": "s1"}, options
        )
    # The retry is served while the first request still sleeps, then the first wakes to a
    # finished key: the log still says the client of the first saw a timeout.
    client.v1.billing.meter_events.create({**EVENT, "identifier": "s1"}, options)
    time.sleep(0.8)
    log = env.control("GET", "/requests", {"path": "*/meter_events"})["data"]
    assert sorted(e["outcome"] for e in log) == ["fault:timeout", "ok"]


def test_probability_and_listing(env: Env, client: stripe.StripeClient) -> None:
    rule = env.control(
        "POST",
        "/faults",
        {"path": "/v1/products", "mode": "error", "count": None, "probability": 0.5, "seed": 3},
    )
    assert env.control("GET", "/faults")["data"][0]["id"] == rule["id"]
    failures = 0
    for _ in range(20):
        try:
            client.v1.products.list()
        except stripe.APIError:
            failures += 1
    assert 0 < failures < 20
    env.control("DELETE", "/faults")
    client.v1.products.list()
