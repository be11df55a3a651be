"""The usage event as it travels from ingest through the Redis stream to the aggregator.

The stream entry holds everything the aggregator needs, as one compact JSON field, so the
aggregator never has to look anything up to fold an event.
"""

from __future__ import annotations

from decimal import Decimal
from hashlib import sha256
from typing import Any, NamedTuple

import msgspec
import orjson


def event_key(tenant: str, event_id: str) -> bytes:
    """The durable dedupe key of an event: 16 bytes of SHA-256 over tenant, NUL, id (UTF-8).
    The same rule as SQL's meter_event_key (migrations/0008_event_keys.sql says why)."""
    return sha256(f"{tenant}\0{event_id}".encode()).digest()[:16]


# A JSON array is cheaper to build than an object and, with its version first, as easy to evolve.
_FORMAT = 1
# The version and every field.
_ENCODED_LEN = 9
# Optimisation: msgspec writes a payload in ~0.2 µs; orjson.dumps took ~0.9 µs an event while a
# batch's payloads wait for its flush (it starts every output in a large buffer), a tenth of
# ingest's CPU for batches. Both write the same JSON but for a float's exponent (`1e+16` and
# `1e16`: the same number); orjson still decodes every payload.
_ENCODER = msgspec.json.Encoder()


def json_text(value: str) -> bytes:
    """A string as a payload writes it: inside the array exactly as alone (the usage API's
    scan looks for a customer's this way)."""
    return _ENCODER.encode(value)


class UsageEvent(NamedTuple):
    """One accepted usage event (a NamedTuple: built once per event on the hot path, cheaply).

    `value` is the decimal as text ("3", "0.25"): exact, never a float, from here to Postgres.
    Times are unix milliseconds.
    """

    tenant: str
    id: str
    customer: str
    meter: str
    value: str
    timestamp_ms: int
    received_at_ms: int
    properties: dict[str, Any] | None = None

    @property
    def decimal_value(self) -> Decimal:
        return Decimal(self.value)

    def encode(self) -> bytes:
        """The stream payload (field `e` of the stream entry): a versioned JSON array of the
        version and every field, in field order."""
        return _ENCODER.encode((_FORMAT, *self))

    @classmethod
    def decode(cls, payload: bytes | str) -> UsageEvent:
        """Inverse of `encode`."""
        doc = orjson.loads(payload)
        if doc[0] != _FORMAT:
            raise ValueError(f"unknown stream entry format {doc[0]!r}")
        if len(doc) == _ENCODED_LEN:
            # Optimisation: the tuple as it stands, without the NamedTuple's Python __new__
            # (4 % of the aggregator's Python time went to it).
            return tuple.__new__(cls, doc[1:])
        return cls(*doc[1:])
