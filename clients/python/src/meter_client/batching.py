"""Event encoding, idempotency ids and the batching decisions: pure, no I/O."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

Timestamp = datetime | int | float | str

# Crockford's base32: no I, L, O, U, so ids survive being read aloud or copied by hand.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_event_id(now_ms: int | None = None, entropy: bytes | None = None) -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, 26 characters.

    Time-ordered, so ids of one client sort by when they were recorded (handy in logs and
    the raw event log); 80 random bits make a collision between clients negligible.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = os.urandom(10) if entropy is None else entropy
    number = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(rand[:10], "big")
    return "".join(_CROCKFORD[(number >> shift) & 31] for shift in range(125, -1, -5))


def wire_timestamp(timestamp: Timestamp | None, now: float) -> int | float | str:
    """The event's time as the API takes it. Unset means `now`, the moment of `record`: stamped
    by the client, so buffering and retries do not shift usage into a later hour."""
    if timestamp is None:
        return round(now, 3)
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware; meter never guesses a zone")
        return timestamp.isoformat()
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float | str):
        raise TypeError("timestamp must be a datetime, unix seconds or RFC 3339 text")
    return timestamp


def encode_event(
    event_id: str,
    customer: str,
    meter: str,
    value: int | float,
    timestamp: int | float | str,
    properties: Mapping[str, Any] | None,
) -> bytes:
    """One event as JSON bytes, encoded at `record` time so a bad property fails the caller
    there, and the buffer holds compact bytes whose size the batcher can count."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError("value must be a finite int or float")
    doc: dict[str, Any] = {
        "id": event_id,
        "customer": customer,
        "meter": meter,
        "value": value,
        "timestamp": timestamp,
    }
    if properties:
        doc["properties"] = dict(properties)
    # Compact and strict: NaN or infinity in `properties` fails here, not at the server.
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def batch_body(events: Sequence[bytes]) -> bytes:
    """A JSON array of already-encoded events."""
    return b"[" + b",".join(events) + b"]"


def batch_take(sizes: Sequence[int], max_events: int, max_bytes: int) -> int:
    """How many events from the head of the buffer (their encoded sizes) go in the next batch:
    at most `max_events` and a body of at most `max_bytes`, but always at least one, so an
    oversized event is sent alone and answered (413) instead of blocking the queue forever."""
    total = 1  # the opening bracket; each event adds its size plus a comma or the closing bracket
    count = 0
    for size in sizes:
        if count == max_events or (count and total + size + 1 > max_bytes):
            break
        total += size + 1
        count += 1
    return count


def next_send_in(
    buffered: int, oldest_age: float, *, max_batch: int, interval: float, flushing: bool
) -> float | None:
    """Seconds until the next batch should go: 0 now, None when there is nothing to send.

    A full batch or an explicit flush goes at once; otherwise the oldest event waits at most
    `interval`, which bounds how stale the server's view of usage can be.
    """
    if buffered == 0:
        return None
    if flushing or buffered >= max_batch:
        return 0.0
    return max(0.0, interval - oldest_age)
