"""The emulator object every handler works on: config, state, faults, replay store, outbox."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import stripe
from aiohttp import web

from meter.stripe_emulator.faults import FaultTable
from meter.stripe_emulator.idempotency import IdempotencyStore
from meter.stripe_emulator.state import State
from meter.stripe_emulator.wire import Obj, hide_includable, new_id, strip_private

API_VERSION: str = stripe.api_version


@dataclass(frozen=True)
class EmulatorConfig:
    """How one emulator runs. Ports 0 pick free ones (tests)."""

    host: str = "127.0.0.1"
    port: int = 12111
    meter_events_port: int = 12112
    webhook_url: str | None = None
    webhook_secret: str | None = None
    state_file: Path | None = None
    api_version: str = API_VERSION
    # Delivery retries: base * 2**attempt seconds, like Stripe's backoff but compressed.
    webhook_retry_base: float = 1.0
    webhook_max_attempts: int = 5
    # Order-safety testing: deliver a batch in random order / some events twice.
    webhook_shuffle: bool = False
    webhook_duplicate_probability: float = 0.0
    # Stripe finalizes a subscription's draft invoice about an hour after creating it.
    invoice_grace_seconds: int = 3600
    # How often periods are rolled for customers on the real-time clock.
    tick_seconds: float = 1.0
    session_ttl_seconds: int = 15 * 60
    fault_seed: int | None = None


@dataclass
class Emulator:
    """Shared by the two apps (api and meter_events) of one emulator."""

    config: EmulatorConfig
    state: State = field(default_factory=State)
    faults: FaultTable = field(default_factory=FaultTable)
    idempotency: IdempotencyStore = field(default_factory=IdempotencyStore)
    # Webhook events waiting for the deliverer; it starts with the app.
    outbox: asyncio.Queue[Obj] | None = None
    pending_events: list[Obj] = field(default_factory=list)
    deliveries: list[Obj] = field(default_factory=list)

    def emit(self, type_: str, obj: Obj, previous: Obj | None = None) -> Obj:
        """Record a Stripe event for a state change and queue it for webhook delivery."""
        data: Obj = {"object": hide_includable(strip_private(obj))}
        if previous:
            data["previous_attributes"] = previous
        customer = obj.get("customer") if obj.get("object") != "customer" else obj.get("id")
        event = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": self.config.api_version,
            "created": self.state.now_for_customer(customer if isinstance(customer, str) else None),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        self.state.put(event)
        if self.outbox is not None:
            self.outbox.put_nowait(event)
        else:
            self.pending_events.append(event)
        return event

    def reset(self) -> None:
        self.state.reset()
        self.faults.clear()
        self.idempotency.clear()
        self.deliveries.clear()


@dataclass
class Req:
    """What a resource handler gets: decoded params, path parts, and the emulator."""

    emu: Emulator
    params: Obj
    match: Mapping[str, str]
    request: web.Request | None = None

    @property
    def state(self) -> State:
        return self.emu.state

    def get(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)


Handler = Callable[[Req], Obj]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler


EMULATOR = web.AppKey("stripe_emulator", Emulator)
SURFACE = web.AppKey("stripe_emulator_surface", str)
PARAMS = web.RequestKey("stripe_emulator_params", dict[str, Any])
API_KEY = web.RequestKey("stripe_emulator_api_key", str)
