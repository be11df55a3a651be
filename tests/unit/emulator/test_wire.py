"""Form decoding, pagination, expansion, signatures, faults and idempotent replay."""

from __future__ import annotations

import hmac
from hashlib import sha256

import pytest
import stripe

from meter.stripe_emulator import webhooks, wire
from meter.stripe_emulator.faults import FaultRule, FaultTable
from meter.stripe_emulator.idempotency import IdempotencyStore, fingerprint
from meter.stripe_emulator.wire import StripeError


def test_decode_form_nested() -> None:
    pairs = [
        ("items[0][price]", "price_a"),
        ("items[0][quantity]", "2"),
        ("items[1][price]", "price_b"),
        ("expand[]", "customer"),
        ("expand[]", "latest_invoice"),
        ("metadata[k]", "v"),
        ("tiers[0][up_to]", "inf"),
        ("email", ""),
    ]
    assert wire.decode_form(pairs) == {
        "items": [{"price": "price_a", "quantity": "2"}, {"price": "price_b"}],
        "expand": ["customer", "latest_invoice"],
        "metadata": {"k": "v"},
        "tiers": [{"up_to": "inf"}],
        "email": "",
    }


def test_paginate() -> None:
    items = [{"id": f"x{i}"} for i in range(5)]
    first = wire.paginate(items, {"limit": "2"}, "/v1/x")
    assert [o["id"] for o in first["data"]] == ["x4", "x3"]
    assert first["has_more"]
    rest = wire.paginate(items, {"limit": "2", "starting_after": "x1"}, "/v1/x")
    assert [o["id"] for o in rest["data"]] == ["x0"]
    assert not rest["has_more"]
    back = wire.paginate(items, {"limit": "2", "ending_before": "x2"}, "/v1/x")
    assert [o["id"] for o in back["data"]] == ["x4", "x3"]
    with pytest.raises(StripeError):
        wire.paginate(items, {"limit": "101"}, "/v1/x")


def test_expand_follows_ids() -> None:
    objects = {"cus_1": {"id": "cus_1", "object": "customer"}}
    sub = {"id": "sub_1", "customer": "cus_1"}
    expanded = wire.expand(sub, ["customer"], objects.get)
    assert expanded["customer"]["object"] == "customer"
    assert sub["customer"] == "cus_1"  # never in place
    with pytest.raises(StripeError):
        wire.expand(sub, ["nope"], objects.get)


def test_signature_verifies_with_the_sdk() -> None:
    payload = '{"id": "evt_1", "object": "event", "type": "x", "data": {"object": {}}}'
    header = webhooks.sign(payload, "whsec_test", 1_800_000_000)
    mac = hmac.new(b"whsec_test", f"1800000000.{payload}".encode(), sha256).hexdigest()
    assert header == f"t=1800000000,v1={mac}"
    stripe.WebhookSignature.verify_header(
        payload, header, "whsec_test", tolerance=10**10
    )  # raises if wrong


def test_fault_table_counts_and_matching() -> None:
    table = FaultTable(seed=1)
    table.add(FaultRule(path="/v1/billing/*", mode="rate_limit", count=2, method="POST"))
    assert table.pick("GET", "/v1/billing/meter_events") is None
    assert table.pick("POST", "/v1/customers") is None
    assert table.pick("POST", "/v1/billing/meter_events") is not None
    assert table.pick("POST", "/v1/billing/meter_events") is not None
    assert table.pick("POST", "/v1/billing/meter_events") is None


def test_fault_probability_is_seeded() -> None:
    def hits(seed: int) -> list[bool]:
        table = FaultTable(seed=seed)
        table.add(FaultRule(path="*", mode="error", count=None, probability=0.5))
        return [table.pick("POST", "/v1/x") is not None for _ in range(50)]

    assert hits(7) == hits(7)
    assert 0 < sum(hits(7)) < 50


def test_fault_rule_validation() -> None:
    with pytest.raises(StripeError):
        FaultRule.from_params({"path": "*", "mode": "explode"})
    rule = FaultRule.from_params({"path": "/v1/*", "mode": "timeout"})
    assert rule.delay == 30.0
    assert rule.count == 1


def test_idempotency_store() -> None:
    store = IdempotencyStore()
    fp = fingerprint("POST", "/v1/customers", {"email": "a"})
    assert store.begin("sk", "k1", fp, 0.0) is None
    with pytest.raises(StripeError) as busy:
        store.begin("sk", "k1", fp, 0.0)
    assert busy.value.status == 409
    store.finish("sk", "k1", fp, 200, b"{}", 0.0)
    stored = store.begin("sk", "k1", fp, 1.0)
    assert stored is not None
    assert stored.body == b"{}"
    other = fingerprint("POST", "/v1/customers", {"email": "b"})
    with pytest.raises(StripeError) as mismatch:
        store.begin("sk", "k1", other, 1.0)
    assert mismatch.value.type == "idempotency_error"
    assert mismatch.value.status == 400
    assert store.begin("sk", "k1", other, 25 * 3600.0) is None  # expired after 24 h
    store.finish("sk", "k2", fp, 500, b"{}", 0.0)
    assert store.begin("sk", "k2", fp, 0.0) is None  # 5xx are not kept
