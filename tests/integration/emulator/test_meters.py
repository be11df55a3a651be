"""Billing meters through the official SDK: v1 events, v2 session + stream, summaries, dedupe."""

from __future__ import annotations

import time

import pytest
import stripe

from meter.stripe_emulator.server import ClientPool

from .conftest import Env

HOUR = 3600


def _setup(client: stripe.StripeClient, formula: str = "sum") -> tuple[str, str]:
    meter = client.v1.billing.meters.create(
        {
            "display_name": "API calls",
            "event_name": f"calls_{formula}",
            "default_aggregation": {"formula": formula},
        }
    )
    customer = client.v1.customers.create({"email": "a@example.com"})
    return meter.id, customer.id


def _hour_start() -> int:
    now = int(time.time())
    return now - now % HOUR


def _event(
    client: stripe.StripeClient, name: str, cus: str, value: str, ts: int, ident: str
) -> None:
    client.v1.billing.meter_events.create(
        {
            "event_name": name,
            "payload": {"stripe_customer_id": cus, "value": value},
            "timestamp": ts,
            "identifier": ident,
        }
    )


def test_meter_crud_and_errors(client: stripe.StripeClient) -> None:
    meter_id, _ = _setup(client)
    meter = client.v1.billing.meters.retrieve(meter_id)
    assert meter.object == "billing.meter"
    assert meter.id.startswith("mtr_")
    assert meter.customer_mapping.event_payload_key == "stripe_customer_id"
    assert meter.value_settings.event_payload_key == "value"
    updated = client.v1.billing.meters.update(meter_id, {"display_name": "Calls"})
    assert updated.display_name == "Calls"
    assert client.v1.billing.meters.deactivate(meter_id).status == "inactive"
    assert client.v1.billing.meters.reactivate(meter_id).status == "active"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.billing.meters.retrieve("mtr_nope")
    assert missing.value.http_status == 404
    assert missing.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as bad:
        client.v1.billing.meters.create(
            {"display_name": "x", "event_name": "y", "default_aggregation": {"formula": "max"}}
        )
    assert bad.value.param == "default_aggregation[formula]"


@pytest.mark.parametrize(
    ("formula", "expected"), [("sum", [6, 4]), ("count", [2, 1]), ("last", [5, 4])]
)
def test_event_summaries_by_hour(
    client: stripe.StripeClient, formula: str, expected: list[int]
) -> None:
    meter_id, cus = _setup(client, formula)
    start = _hour_start() - 2 * HOUR
    name = f"calls_{formula}"
    _event(client, name, cus, "5", start + 10, "e1")
    _event(client, name, cus, "1", start + 5, "e2")  # earlier timestamp, later arrival
    _event(client, name, cus, "4", start + HOUR + 1, "e3")
    summaries = client.v1.billing.meters.event_summaries.list(
        meter_id,
        {
            "customer": cus,
            "start_time": start,
            "end_time": start + 2 * HOUR,
            "value_grouping_window": "hour",
        },
    )
    # Newest window first, as Stripe lists them.
    assert [s.aggregated_value for s in summaries.data] == list(reversed(expected))
    assert summaries.data[0].start_time == start + HOUR
    whole = client.v1.billing.meters.event_summaries.list(
        meter_id, {"customer": cus, "start_time": start, "end_time": start + 2 * HOUR}
    )
    assert len(whole.data) == 1


def test_summaries_paginate_and_validate(client: stripe.StripeClient) -> None:
    meter_id, cus = _setup(client)
    start = _hour_start() - 5 * HOUR
    for i in range(5):
        _event(client, "calls_sum", cus, str(i + 1), start + i * HOUR, f"p{i}")
    params = {
        "customer": cus,
        "start_time": start,
        "end_time": start + 5 * HOUR,
        "value_grouping_window": "hour",
        "limit": 2,
    }
    page = client.v1.billing.meters.event_summaries.list(meter_id, params)
    assert page.has_more
    values = [s.aggregated_value for s in page.auto_paging_iter()]
    assert values == [5, 4, 3, 2, 1]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meters.event_summaries.list(
            meter_id, {**params, "start_time": start + 60}
        )
    assert exc.value.param == "start_time"


def test_v1_identifier_dedupe_and_rules(client: stripe.StripeClient, env: Env) -> None:
    meter_id, cus = _setup(client)
    now = int(time.time())
    _event(client, "calls_sum", cus, "3", now, "dup-1")
    with pytest.raises(stripe.InvalidRequestError) as dup:
        _event(client, "calls_sum", cus, "3", now, "dup-1")
    assert "already exists with identifier dup-1" in str(dup.value.user_message)
    assert dup.value.headers is not None
    assert dup.value.headers["stripe-should-retry"] == "false"
    with pytest.raises(stripe.InvalidRequestError) as old:
        _event(client, "calls_sum", cus, "1", now - 36 * 86400, "old")
    assert old.value.code == "timestamp_too_far_in_past"
    assert old.value.param == "timestamp"
    with pytest.raises(stripe.InvalidRequestError) as future:
        _event(client, "calls_sum", cus, "1", now + 600, "future")
    assert future.value.code == "timestamp_in_future"
    with pytest.raises(stripe.InvalidRequestError) as digits:
        _event(client, "calls_sum", cus, "1234567890123456", now, "digits")
    assert digits.value.param == "payload[value]"
    with pytest.raises(stripe.InvalidRequestError):
        _event(client, "calls_sum", cus, "1", now, "x" * 101)
    # Unknown customers are accepted, then reported asynchronously (not counted).
    _event(client, "calls_sum", "cus_unknown", "1", now, "ghost")
    events = env.control("GET", "/meter_events")
    assert [e["identifier"] for e in events["data"]] == ["dup-1"]
    assert events["rejected"][0]["code"] == "meter_event_customer_not_found"
    totals = env.control("GET", f"/meters/{meter_id}/totals")
    assert totals["totals"] == {cus: 3}


def test_adjustment_cancels_an_event(client: stripe.StripeClient, env: Env) -> None:
    meter_id, cus = _setup(client)
    now = int(time.time())
    _event(client, "calls_sum", cus, "3", now, "keep")
    _event(client, "calls_sum", cus, "4", now, "cancel-me")
    adj = client.v1.billing.meter_event_adjustments.create(
        {"event_name": "calls_sum", "type": "cancel", "cancel": {"identifier": "cancel-me"}}
    )
    assert adj.object == "billing.meter_event_adjustment"
    assert env.control("GET", f"/meters/{meter_id}/totals")["totals"] == {cus: 3}
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meter_event_adjustments.create(
            {"event_name": "calls_sum", "type": "cancel", "cancel": {"identifier": "nope"}}
        )


def test_v2_session_stream_expiry_and_renewal(
    client: stripe.StripeClient, pool: ClientPool, env: Env
) -> None:
    meter_id, cus = _setup(client)
    session = client.v2.billing.meter_event_session.create()
    assert session.object == "v2.billing.meter_event_session"
    assert session.authentication_token.startswith("ek_test_")
    streamer = pool.client(api_key=session.authentication_token)
    batch = [
        {
            "event_name": "calls_sum",
            "identifier": f"s{i}",
            "payload": {"stripe_customer_id": cus, "value": "2"},
        }
        for i in range(3)
    ]
    streamer.v2.billing.meter_event_stream.create({"events": batch})
    streamer.v2.billing.meter_event_stream.create({"events": batch})  # duplicates: dropped
    assert env.control("GET", f"/meters/{meter_id}/totals")["totals"] == {cus: 6}
    with pytest.raises(stripe.InvalidRequestError):
        streamer.v2.billing.meter_event_stream.create({"events": batch * 34})  # 102 > 100
    # The api key is not a session token.
    with pytest.raises(stripe.AuthenticationError):
        client.v2.billing.meter_event_stream.create({"events": batch})
    env.control("POST", "/sessions/expire")
    with pytest.raises(stripe.TemporarySessionExpiredError):
        streamer.v2.billing.meter_event_stream.create({"events": batch})
    renewed = client.v2.billing.meter_event_session.create()
    pool.client(api_key=renewed.authentication_token).v2.billing.meter_event_stream.create(
        {"events": [{**batch[0], "identifier": "after-renewal"}]}
    )
    assert env.control("GET", f"/meters/{meter_id}/totals")["totals"] == {cus: 8}


def test_v2_meter_events_and_adjustments(client: stripe.StripeClient, env: Env) -> None:
    meter_id, cus = _setup(client)
    event = client.v2.billing.meter_events.create(
        {
            "event_name": "calls_sum",
            "identifier": "v2-1",
            "payload": {"stripe_customer_id": cus, "value": "7"},
        }
    )
    assert event.object == "v2.billing.meter_event"
    assert event.identifier == "v2-1"
    adj = client.v2.billing.meter_event_adjustments.create(
        {"event_name": "calls_sum", "type": "cancel", "cancel": {"identifier": "v2-1"}}
    )
    assert adj.object == "v2.billing.meter_event_adjustment"
    assert env.control("GET", f"/meters/{meter_id}/totals")["totals"] == {cus: 0}


def test_deactivated_meter_drops_events_until_reactivated(
    client: stripe.StripeClient, env: Env
) -> None:
    """Deactivated: "no more meter events will be accepted for this meter"
    (docs.stripe.com/api/billing/meter/deactivate), reported asynchronously as `archived_meter`;
    reactivated: "events for this meter can be accepted" (…/meter/reactivate)."""
    meter_id, cus = _setup(client)
    now = int(time.time())
    client.v1.billing.meters.deactivate(meter_id)
    _event(client, "calls_sum", cus, "5", now, "off-1")  # accepted (200), then rejected
    _event(client, "nothing_meters_this", cus, "1", now, "none-1")
    rejected = {e["identifier"]: e["code"] for e in env.control("GET", "/meter_events")["rejected"]}
    assert rejected == {"off-1": "archived_meter", "none-1": "no_meter"}
    client.v1.billing.meters.reactivate(meter_id)
    _event(client, "calls_sum", cus, "2", now, "on-1")
    totals = env.control("GET", f"/meters/{meter_id}/totals")
    assert totals["totals"] == {cus: 2}  # the event sent while inactive stays dropped
