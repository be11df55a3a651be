"""Webhook endpoints and signed event delivery with retries.

Each event goes to the `--webhook-url` (signed with `--webhook-secret`), to every enabled
webhook endpoint created through the API (signed with its own `whsec_`) and to the event
destinations subscribed to it (event_destinations.py; thin notifications go only there). The
signature is Stripe's: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, which
`stripe.Webhook.construct_event` verifies. A non-2xx answer or a network error is retried with
exponential backoff; with `webhook_shuffle` a burst is delivered out of order, and with
`webhook_duplicate_probability` some events are delivered twice, to test order and dedupe safety.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import secrets
import time
import typing
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web

from meter.stripe_emulator.core import EMULATOR, Emulator, Req, Route
from meter.stripe_emulator.resources import apply_updates, deleted, metadata_of
from meter.stripe_emulator.wire import Obj, invalid, new_id, paginate, str_param
from meter.tasks import cancel_and_wait

BASE = "/v1/webhook_endpoints"
DELIVERY_TIMEOUT = 10.0


def routes() -> list[Route]:
    return [
        Route("POST", BASE, create),
        Route("GET", BASE, list_),
        Route("GET", BASE + "/{id}", retrieve),
        Route("POST", BASE + "/{id}", update),
        Route("DELETE", BASE + "/{id}", delete),
    ]


def sign(payload: str, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header value for `payload`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _event_types() -> frozenset[str]:
    """The types a v1 endpoint may subscribe to: Stripe's API description of `enabled_events`,
    as the pinned SDK's typed params carry it (`*` included)."""
    from stripe.params import WebhookEndpointCreateParams

    (literal,) = typing.get_args(WebhookEndpointCreateParams.__annotations__["enabled_events"])
    return frozenset(typing.get_args(literal))


EVENT_TYPES = _event_types()


def _enabled_events(raw: object) -> list[str]:
    """Known snapshot event types only. A thin one (`v1.…`, `v2.…`) goes to an event destination
    with thin payloads (https://docs.stripe.com/api/v2/event-destinations/create), never here."""
    if not isinstance(raw, list) or not raw:
        raise invalid("Missing required param: enabled_events.", "enabled_events")
    for i, event in enumerate(raw):
        if str(event).startswith(("v1.", "v2.")):
            raise invalid(
                f"Invalid enabled_events[{i}]: {event} is a thin event; it is sent to event "
                "destinations only.",
                f"enabled_events[{i}]",
            )
        if str(event) not in EVENT_TYPES:
            raise invalid(
                f"Invalid enabled_events[{i}]: {event} is not an event type.",
                f"enabled_events[{i}]",
            )
    return [str(e) for e in raw]


def create(req: Req) -> Obj:
    url = str_param(req.params, "url")
    events = _enabled_events(req.get("enabled_events"))
    endpoint: Obj = {
        "id": new_id("we"),
        "object": "webhook_endpoint",
        "api_version": req.get("api_version") or req.emu.config.api_version,
        "application": None,
        "created": req.state.now(),
        "description": req.get("description"),
        "enabled_events": events,
        "livemode": False,
        "metadata": metadata_of(req),
        "secret": "whsec_" + secrets.token_hex(16),
        "status": "enabled",
        "url": url,
    }
    req.state.put(endpoint)
    return endpoint


def _hide_secret(endpoint: Obj) -> Obj:
    # Stripe shows the signing secret only in the create response.
    return {k: v for k, v in endpoint.items() if k != "secret"}


def retrieve(req: Req) -> Obj:
    return _hide_secret(req.state.get("webhook_endpoint", req.match["id"]))


def list_(req: Req) -> Obj:
    found = [_hide_secret(e) for e in req.state.all("webhook_endpoint")]
    return paginate(found, req.params, BASE)


def update(req: Req) -> Obj:
    endpoint = req.state.get("webhook_endpoint", req.match["id"])
    if "enabled_events" in req.params:
        _enabled_events(req.params["enabled_events"])
    apply_updates(req, endpoint, ("url", "description", "enabled_events"))
    if req.get("disabled") not in (None, ""):
        endpoint["status"] = "disabled" if req.get("disabled") == "true" else "enabled"
    return _hide_secret(endpoint)


def delete(req: Req) -> Obj:
    endpoint = req.state.get("webhook_endpoint", req.match["id"])
    req.state.delete(endpoint["id"])
    return deleted(endpoint)


@dataclass(frozen=True)
class Target:
    url: str
    secret: str
    endpoint: str | None


def targets(emu: Emulator, event: Obj) -> list[Target]:
    """Where one event goes. A thin notification (`v2.core.event`) goes to the enabled event
    destinations with thin payloads subscribed to its type, and nowhere else; a v1 event to the
    configured URL, the webhook endpoints and the snapshot destinations subscribed to it."""
    event_type = event["type"]
    thin = event.get("object") == "v2.core.event"
    found = []
    if not thin and emu.config.webhook_url and emu.config.webhook_secret:
        found.append(Target(emu.config.webhook_url, emu.config.webhook_secret, None))
    if not thin:
        for endpoint in emu.state.all("webhook_endpoint"):
            enabled = endpoint["enabled_events"]
            if endpoint["status"] == "enabled" and ("*" in enabled or event_type in enabled):
                found.append(Target(endpoint["url"], endpoint["secret"], endpoint["id"]))
    for destination in emu.state.all("v2.core.event_destination"):
        if (
            destination["status"] == "enabled"
            and destination["event_payload"] == ("thin" if thin else "snapshot")
            and event_type in destination["enabled_events"]
        ):
            found.append(Target(destination["_url"], destination["_secret"], destination["id"]))
    return found


async def delivery_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the deliverer runs for the app's lifetime, with its own HTTP session."""
    emu = app[EMULATOR]
    emu.outbox = asyncio.Queue()
    for event in emu.pending_events:
        emu.outbox.put_nowait(event)
    emu.pending_events.clear()
    timeout = aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        deliverer = Deliverer(emu, session)
        task = asyncio.create_task(deliverer.run())
        yield
        await cancel_and_wait(task)
        await deliverer.stop()
    emu.outbox = None


class Deliverer:
    def __init__(self, emu: Emulator, session: aiohttp.ClientSession) -> None:
        self.emu = emu
        self.session = session
        self.retries: set[asyncio.Task[None]] = set()
        self.rng = random.Random(emu.config.fault_seed)

    async def run(self) -> None:
        assert self.emu.outbox is not None
        queue = self.emu.outbox
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            if self.emu.config.webhook_shuffle:
                self.rng.shuffle(batch)
            for event in batch:
                copies = (
                    2 if self.rng.random() < self.emu.config.webhook_duplicate_probability else 1
                )
                for target in targets(self.emu, event):
                    for _ in range(copies):
                        await self.attempt(event, target, 1)

    async def attempt(self, event: Obj, target: Target, attempt: int) -> None:
        """One delivery; on failure a retry is scheduled after an exponential backoff."""
        payload = orjson.dumps(event).decode()
        header = sign(payload, target.secret, int(time.time()))
        record: Obj = {
            "event": event["id"],
            "type": event["type"],
            "url": target.url,
            "endpoint": target.endpoint,
            "attempt": attempt,
            "status": None,
            "error": None,
        }
        self.emu.deliveries.append(record)
        try:
            async with self.session.post(
                target.url,
                data=payload,
                headers={"Stripe-Signature": header, "Content-Type": "application/json"},
            ) as response:
                record["status"] = response.status
                ok = 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError) as exc:
            record["error"] = type(exc).__name__
            ok = False
        if ok or attempt >= self.emu.config.webhook_max_attempts:
            return
        delay = self.emu.config.webhook_retry_base * 2 ** (attempt - 1)
        task = asyncio.create_task(self._retry(event, target, attempt + 1, delay))
        self.retries.add(task)
        task.add_done_callback(self.retries.discard)

    async def _retry(self, event: Obj, target: Target, attempt: int, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.attempt(event, target, attempt)

    async def stop(self) -> None:
        await cancel_and_wait(*self.retries)
