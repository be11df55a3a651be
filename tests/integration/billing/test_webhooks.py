"""`POST /stripe/webhook`: signature, tolerance, idempotency, database failure and redelivery."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import orjson
import pytest

from meter.stripe_emulator.event_destinations import emit_thin, notification
from meter.stripe_emulator.webhooks import sign

from .conftest import SECRET, Stack


def _event(id_: str, type_: str, obj: dict[str, object], created: int) -> bytes:
    return orjson.dumps(
        {
            "id": id_,
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": created,
            "data": {"object": obj},
            "livemode": False,
            "type": type_,
        }
    )


def _customer(id_: str, email: str) -> dict[str, object]:
    return {"id": id_, "object": "customer", "email": email, "metadata": {"meter_customer": "x1"}}


async def _post(stack: Stack, body: bytes, signature: str | None) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    response = await stack.client.post("/stripe/webhook", data=body, headers=headers)
    return response.status, await response.json()


async def _count(stack: Stack, sql: str) -> int:
    async with stack.billing.connection() as conn:
        n: int = await conn.fetchval(sql)
    return n


@pytest.mark.parametrize(
    ("secret", "age", "header"),
    [
        ("whsec_wrong", 0, True),  # signed with another secret
        (SECRET, 301, True),  # past the 300 s tolerance: a replay
        (SECRET, 0, False),  # no signature at all
    ],
)
async def test_unverified_delivery_is_refused_and_applies_nothing(
    stack: Stack, secret: str, age: int, header: bool
) -> None:
    now = int(time.time())
    body = _event("evt_bad", "customer.created", _customer("cus_bad", "b@x.io"), now)
    status, doc = await _post(
        stack, body, sign(body.decode(), secret, now - age) if header else None
    )
    assert status == 400
    assert doc["error"]["type"] == "signature_verification_error"  # type: ignore[index]
    assert await _count(stack, "SELECT count(*) FROM stripe_events") == 0
    assert await _count(stack, "SELECT count(*) FROM customers") == 0
    metric = stack.billing.metrics.webhook_events.labels("unknown", "bad_signature")
    assert metric._value.get() == 1


async def test_fresh_signature_applies_once_and_duplicates_are_noops(stack: Stack) -> None:
    now = int(time.time())
    body = _event("evt_1", "customer.created", _customer("cus_1", "a@x.io"), now)
    for expected in ("applied", "duplicate", "duplicate"):
        status, doc = await _post(stack, body, sign(body.decode(), SECRET, int(time.time())))
        assert (status, doc["outcome"]) == (200, expected)
    async with stack.billing.connection() as conn:
        row = await conn.fetchrow("SELECT * FROM customers WHERE stripe_id = 'cus_1'")
    assert row is not None
    assert (row["tenant"], row["external_id"], row["email"]) == ("acme", "x1", "a@x.io")
    # An older event about the same customer arrives late: it must not overwrite.
    old = _event("evt_0", "customer.updated", _customer("cus_1", "old@x.io"), now - 60)
    status, doc = await _post(stack, old, sign(old.decode(), SECRET, int(time.time())))
    assert (status, doc["outcome"]) == (200, "stale")
    async with stack.billing.connection() as conn:
        assert await conn.fetchval("SELECT email FROM customers") == "a@x.io"
    unknown = _event("evt_2", "radar.early_fraud_warning.created", {"id": "issfr_1"}, now)
    status, doc = await _post(stack, unknown, sign(unknown.decode(), SECRET, int(time.time())))
    assert (status, doc["outcome"]) == (200, "ignored")
    ignored = stack.billing.metrics.webhook_events.labels(
        "radar.early_fraud_warning.created", "ignored"
    )
    assert ignored._value.get() == 1


async def test_concurrent_duplicate_deliveries_apply_once(stack: Stack) -> None:
    now = int(time.time())
    body = _event("evt_c", "customer.created", _customer("cus_c", "c@x.io"), now)
    sig = sign(body.decode(), SECRET, now)
    results = await asyncio.gather(*(_post(stack, body, sig) for _ in range(8)))
    outcomes = sorted(doc["outcome"] for _, doc in results)  # type: ignore[type-var]
    assert outcomes == ["applied"] + ["duplicate"] * 7


async def test_database_down_answers_500_then_redelivery_applies(
    stack: Stack, pg_url: str, database_url: str, db: asyncpg.Connection
) -> None:
    name = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(pg_url)
    try:
        # Take the database away from the app: no new connections, its pooled ones killed.
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> $2",
            name,
            db.get_server_pid(),
        )
        cus = await stack.sdk.v1.customers.create_async(
            {"email": "down@x.io", "metadata": {"meter_customer": "down-1"}}
        )
        deadline = time.monotonic() + 15
        while not any(d["status"] == 500 for d in stack.emu.deliveries):
            assert time.monotonic() < deadline, stack.emu.deliveries
            await asyncio.sleep(0.02)
        assert await db.fetchval("SELECT count(*) FROM stripe_events") == 0
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    await stack.settle()
    row = await db.fetchrow("SELECT external_id, email FROM customers WHERE stripe_id = $1", cus.id)
    assert row is not None
    assert (row["external_id"], row["email"]) == ("down-1", "down@x.io")
    attempts = [d["status"] for d in stack.emu.deliveries if d["type"] == "customer.created"]
    assert attempts[0] == 500
    assert attempts[-1] == 200


async def test_meter_error_report_is_recorded_and_counted(stack: Stack) -> None:
    # Stripe's report, as the emulator keeps it for `/v2/core/events/{id}`; the notification
    # (posted here) is that event without its data, which meter fetches.
    event = emit_thin(
        stack.emu,
        "v1.billing.meter.error_report_triggered",
        {"id": "mtr_1", "type": "billing.meter", "url": "/v1/billing/meters/mtr_1"},
        {
            "developer_message_summary": "2 events had no customer",
            "reason": {
                "error_count": 2,
                "error_types": [{"code": "meter_event_no_customer_defined", "error_count": 2}],
            },
        },
    )
    event["created"] = "2026-11-02T10:00:00.000Z"
    thin = orjson.dumps(notification(event))
    status, doc = await _post(stack, thin, sign(thin.decode(), SECRET, int(time.time())))
    assert (status, doc["outcome"]) == (200, "applied")
    async with stack.billing.connection() as conn:
        row = await conn.fetchrow("SELECT * FROM meter_error_reports")
        created = await conn.fetchval("SELECT created FROM stripe_events")
    assert row is not None
    assert (row["meter"], row["error_code"], row["error_count"]) == (
        "mtr_1",
        "meter_event_no_customer_defined",
        2,
    )
    assert created == 1793613600
    metric = stack.billing.metrics.meter_errors.labels("meter_event_no_customer_defined")
    assert metric._value.get() == 2
