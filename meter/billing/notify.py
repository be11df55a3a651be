"""Where dunning notices go: a hook with a default that logs, or an outbound JSON webhook."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
import orjson

from meter.webhooks import signing

log = logging.getLogger(__name__)


class Notifier(Protocol):
    async def send(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Deliver one notice; raising means "not sent" (the step is retried next run)."""
        ...

    async def close(self) -> None: ...


class LogNotifier:
    """The default: one log line per notice (wire a real sender with METER_BILLING_NOTIFY_URL)."""

    async def send(self, kind: str, payload: Mapping[str, Any]) -> None:
        log.info("dunning notice", extra={"kind": kind, **payload})

    async def close(self) -> None:
        return None


class WebhookNotifier:
    """POSTs `{"type": kind, "data": payload}` to a URL, signed with `secret` like meter's
    webhooks (`Meter-Signature`, verified by meter_client.webhooks.verify); non-2xx is a
    failure."""

    def __init__(self, url: str, secret: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self._secret = secret
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def send(self, kind: str, payload: Mapping[str, Any]) -> None:
        body = orjson.dumps({"type": kind, "data": payload}, default=str)
        headers = {
            "Content-Type": "application/json",
            signing.HEADER: signing.header(body, [self._secret], int(time.time())),
        }
        async with self._session.post(self.url, data=body, headers=headers) as response:
            response.raise_for_status()

    async def close(self) -> None:
        await self._session.close()


def make_notifier(url: str | None, secret: str | None) -> Notifier:
    """The webhook when a URL is set (Settings requires its secret then), else the log."""
    if url:
        assert secret, "Settings refuses a notify URL without its secret"
        return WebhookNotifier(url, secret)
    return LogNotifier()
