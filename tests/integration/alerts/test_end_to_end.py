"""Alerts end to end, every process of the path in turn: events through ingest, folded by the
aggregator, evaluated, delivered by the notifier to a local receiver, whose signature the Python
client verifies (its own implementation, not the server's); a hard limit refused at ingest."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from meter.config import Settings
from meter_client import webhooks as client_webhooks
from notifier.worker import Notifier
from tests.integration.webhooks.conftest import Receiver
from tests.integration.webhooks.conftest import receiver as receiver

from .conftest import DAY, Client, calls, create_rule, drain, evaluate_touches, post_events, seed


async def _endpoint(client: Client, api_key: str, url: str) -> str:
    response = await client.post(
        "/v1/webhook_endpoints",
        data=orjson.dumps({"url": url, "enabled_events": ["*"]}),
        headers={"Authorization": f"Bearer {api_key}"},
    )
    doc = await response.json()
    assert response.status == 200, doc
    secret: str = doc["secret"]
    return secret


async def _pipeline(settings: Settings, redis: Redis) -> None:
    """Fold what ingest took, evaluate what was folded, deliver what was announced."""
    await drain(settings, redis)
    await evaluate_touches(settings, redis)
    async with Notifier(settings) as notifier:
        await notifier.once()


def _verified(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    return [client_webhooks.verify(r.body, r.signature, secret) for r in receiver.received]


async def test_crossing_80_percent_delivers_one_signed_webhook(
    client: Client,
    api_key: str,
    db: asyncpg.Connection,
    redis: Redis,
    settings: Settings,
    receiver: Receiver,
) -> None:
    now = int(time.time())
    await seed(db, (now - DAY, now + 29 * DAY), limit=1000)
    secret = await _endpoint(client, api_key, receiver.url)
    await create_rule(client, api_key, meter="calls", kind="percent_of_limit", thresholds=[80])
    await post_events(client, api_key, calls("c-1", "a", [500, 200]))
    await _pipeline(settings, redis)
    assert receiver.received == []  # 70 %
    await post_events(client, api_key, calls("c-1", "b", [150]))
    await _pipeline(settings, redis)
    await post_events(client, api_key, calls("c-1", "c", [10]))  # past 80 % again: no news
    await _pipeline(settings, redis)
    [event] = _verified(receiver, secret)
    assert event["type"] == "usage.threshold_crossed"
    assert (event["data"]["customer"], event["data"]["threshold"]) == ("c-1", "80")
    assert event["data"]["value"] == "85"


async def test_a_hard_limit_refuses_the_customers_next_events(
    client: Client,
    api_key: str,
    db: asyncpg.Connection,
    redis: Redis,
    settings: Settings,
    receiver: Receiver,
) -> None:
    now = int(time.time())
    await seed(db, (now - DAY, now + 29 * DAY))
    secret = await _endpoint(client, api_key, receiver.url)
    await create_rule(
        client, api_key, meter="calls", kind="units", thresholds=[100], hard_limit=True
    )
    await post_events(client, api_key, calls("c-1", "a", [120]))
    await _pipeline(settings, redis)
    types = [e["type"] for e in _verified(receiver, secret)]
    assert sorted(types) == ["usage.limit_reached", "usage.threshold_crossed"]
    # The serve process reads blocks every half second: refused within a few of them.
    deadline = time.monotonic() + 30
    while True:
        response = await client.post(
            "/v1/events",
            data=orjson.dumps(calls("c-1", f"late-{time.monotonic_ns()}", [1])),
            headers={"Authorization": f"Bearer {api_key}"},
        )
        doc = await response.json()
        if doc["rejected"]:
            break
        assert time.monotonic() < deadline, doc
        await asyncio.sleep(0.1)
    [item] = doc["results"]
    assert (item["status"], item["reason"]) == ("rejected", "over_limit")
    # Another customer of the tenant is not limited.
    await post_events(client, api_key, calls("c-2", "other", [1]))
