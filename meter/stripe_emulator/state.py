"""The emulator's whole memory: one object registry, meter events, sessions, logs, clocks.

Objects are kept in their wire shape (plain dicts), so what a handler stores is what the SDK gets
back, and the state serialises to JSON as is for `--state-file`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from meter.stripe_emulator.wire import Obj, not_found

# What each object type is called in "No such …" errors.
KIND_NAMES = {
    "customer": "customer",
    "product": "product",
    "price": "price",
    "coupon": "coupon",
    "billing.meter": "billing meter",
    "subscription": "subscription",
    "subscription_item": "subscription item",
    "invoice": "invoice",
    "invoiceitem": "invoice item",
    "test_helpers.test_clock": "test clock",
    "checkout.session": "checkout session",
    "billing_portal.session": "billing portal session",
    "setup_intent": "setupintent",
    "webhook_endpoint": "webhook endpoint",
    "event": "event",
    "v2.core.event": "event",
    "v2.core.event_destination": "event destination",
}


@dataclass
class MeterEventRecord:
    """One accepted meter event, resolved to its meter's customer and value at intake."""

    event_name: str
    meter: str
    customer: str
    value: str  # Decimal as text: exact, and JSON-safe
    timestamp: int
    identifier: str
    created: int
    canceled: bool = False
    # The emulator's wall clock when it arrived (not the customer's test clock): adjustments
    # count their 24 hours from it.
    received: int = 0


@dataclass
class State:
    """Everything the emulator knows. Mutated only from the event loop, so no locks."""

    objects: dict[str, Obj] = field(default_factory=dict)
    order: dict[str, list[str]] = field(default_factory=dict)
    meter_events: list[MeterEventRecord] = field(default_factory=list)
    identifiers: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, float] = field(default_factory=dict)
    clock_offset: float = 0.0
    request_log: list[Obj] = field(default_factory=list)
    # Controls what "paying" an invoice does: customer id (or "*") → "succeed" | "fail".
    payment_outcomes: dict[str, str] = field(default_factory=dict)
    # Events Stripe would accept and then report in a meter error report (async validation).
    rejected_meter_events: list[Obj] = field(default_factory=list)

    # -- time ---------------------------------------------------------------------------------
    def now(self) -> int:
        """The emulator's wall clock: real time moved by `/_emulator/clock`."""
        return int(time.time() + self.clock_offset)

    def now_for_customer(self, customer_id: str | None) -> int:
        """A customer on a test clock lives at that clock's frozen time, as in Stripe."""
        if customer_id and (cus := self.objects.get(customer_id)):
            clock_id = cus.get("test_clock")
            if clock_id and (clock := self.objects.get(clock_id)):
                return int(clock["frozen_time"])
        return self.now()

    # -- registry -----------------------------------------------------------------------------
    def put(self, obj: Obj) -> Obj:
        """Store a new object under its id, remembering creation order per type."""
        self.objects[obj["id"]] = obj
        self.order.setdefault(obj["object"], []).append(obj["id"])
        return obj

    def get(self, kind: str, id_: str, param: str = "id") -> Obj:
        """The live object, or Stripe's 404 for that type."""
        obj = self.objects.get(id_)
        if obj is None or obj["object"] != kind or obj.get("deleted"):
            raise not_found(KIND_NAMES.get(kind, kind), id_, param)
        return obj

    def find(self, id_: str) -> Obj | None:
        obj = self.objects.get(id_)
        return None if obj is None or obj.get("deleted") else obj

    def all(self, kind: str) -> list[Obj]:
        """Live objects of one type in creation order."""
        found = (self.objects[i] for i in self.order.get(kind, []))
        return [o for o in found if not o.get("deleted")]

    def delete(self, id_: str) -> None:
        self.objects[id_]["deleted"] = True

    # -- persistence --------------------------------------------------------------------------
    def to_json(self) -> bytes:
        doc = asdict(self)
        doc.pop("request_log")
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, data: bytes) -> State:
        doc: dict[str, Any] = orjson.loads(data)
        events = [MeterEventRecord(**e) for e in doc.pop("meter_events", [])]
        return cls(meter_events=events, **doc)

    def save(self, path: Path) -> None:
        # Write-then-rename, so a crash mid-write never leaves a half file behind.
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> State:
        return cls.from_json(path.read_bytes()) if path.exists() else cls()

    def reset(self) -> None:
        fresh = State()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))
