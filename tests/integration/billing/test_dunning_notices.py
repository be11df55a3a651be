"""Dunning notices to METER_BILLING_NOTIFY_URL are signed like meter's webhooks: the receiver
verifies them with meter_client.webhooks.verify and the notifier's secret, and nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from meter.billing.notify import WebhookNotifier
from meter_client import webhooks

SECRET = "whsec_dunning_receiver_key"


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[bytes, str]]]]:
    got: list[tuple[bytes, str]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((await request.read(), request.headers.get("Meter-Signature", "")))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/dunning", hook)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("/dunning")), got
    finally:
        await server.close()


async def test_a_notice_is_signed_and_verifies_with_the_secret_only(
    receiver: tuple[str, list[tuple[bytes, str]]],
) -> None:
    url, got = receiver
    notifier = WebhookNotifier(url, SECRET)
    try:
        await notifier.send("payment_failed", {"customer": "acme-1", "attempt": 2})
    finally:
        await notifier.close()
    [(body, header)] = got
    doc = webhooks.verify(body, header, SECRET)
    assert doc == {"type": "payment_failed", "data": {"customer": "acme-1", "attempt": 2}}
    with pytest.raises(webhooks.WebhookSignatureError):
        webhooks.verify(body, header, "whsec_someone_else_entirely")
    with pytest.raises(webhooks.WebhookSignatureError):
        webhooks.verify(body.replace(b"acme-1", b"acme-2"), header, SECRET)
