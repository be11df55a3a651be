"""Batching decisions, event encoding and ids: pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meter.ingest.validation import MAX_ID_CHARS
from meter_client.batching import (
    batch_body,
    batch_take,
    encode_event,
    new_event_id,
    next_send_in,
    wire_timestamp,
)


def test_batch_take_stops_at_the_event_count() -> None:
    assert batch_take([10] * 5000, max_events=1000, max_bytes=10**9) == 1000
    assert batch_take([10] * 3, max_events=1000, max_bytes=10**9) == 3
    assert batch_take([], max_events=1000, max_bytes=10**9) == 0


def test_batch_take_stops_before_the_byte_cap() -> None:
    # "[" + 3 x (10 bytes + separator) = 34 bytes: the third event fits in 34, not in 33.
    assert batch_take([10, 10, 10, 10], max_events=100, max_bytes=34) == 3
    assert batch_take([10, 10, 10, 10], max_events=100, max_bytes=33) == 2


def test_an_oversized_event_goes_alone_rather_than_blocking_the_queue() -> None:
    assert batch_take([5000, 10], max_events=100, max_bytes=100) == 1


@given(
    sizes=st.lists(st.integers(1, 300), max_size=60),
    max_events=st.integers(1, 50),
    max_bytes=st.integers(2, 2000),
)
def test_batch_body_respects_both_caps(sizes: list[int], max_events: int, max_bytes: int) -> None:
    count = batch_take(sizes, max_events, max_bytes)
    events = [b"x" * size for size in sizes[:count]]
    assert count <= max_events
    if sizes:
        assert count >= 1
    if count > 1:
        assert len(batch_body(events)) <= max_bytes
    if count < len(sizes) and count < max_events:
        # The next event would not have fitted.
        assert len(batch_body([*events, b"x" * sizes[count]])) > max_bytes


def test_next_send_in() -> None:
    kw = {"max_batch": 100, "interval": 1.0}
    assert next_send_in(0, 0.0, flushing=True, **kw) is None
    assert next_send_in(100, 0.0, flushing=False, **kw) == 0.0
    assert next_send_in(1, 0.0, flushing=True, **kw) == 0.0
    assert next_send_in(1, 0.25, flushing=False, **kw) == 0.75
    assert next_send_in(1, 5.0, flushing=False, **kw) == 0.0


def test_event_ids_are_ulids() -> None:
    # The time part of the ULID spec's own example (1469918176385 → 01ARYZ6S41).
    first = new_event_id(now_ms=1469918176385, entropy=bytes(10))
    later = new_event_id(now_ms=1469918176386, entropy=b"\xff" * 10)
    assert first == "01ARYZ6S41" + "0" * 16
    assert later == "01ARYZ6S42" + "Z" * 16
    assert len(first) == len(later) == 26 <= MAX_ID_CHARS
    assert first < later
    assert len({new_event_id() for _ in range(1000)}) == 1000


def test_encode_event() -> None:
    body = encode_event("e1", "cus_1", "api_calls", 2.5, 1700000000.5, {"region": "eu"})
    assert orjson.loads(body) == {
        "id": "e1",
        "customer": "cus_1",
        "meter": "api_calls",
        "value": 2.5,
        "timestamp": 1700000000.5,
        "properties": {"region": "eu"},
    }
    assert "properties" not in orjson.loads(encode_event("e", "c", "m", 1, 0, None))
    with pytest.raises(TypeError):
        encode_event("e", "c", "m", True, 0, None)
    with pytest.raises(TypeError):
        encode_event("e", "c", "m", float("nan"), 0, None)
    with pytest.raises(TypeError):
        encode_event("e", "c", "m", 1, 0, {"x": object()})


def test_wire_timestamp() -> None:
    assert wire_timestamp(None, 1700000000.12345) == 1700000000.123
    aware = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert wire_timestamp(aware, 0.0) == "2026-01-02T03:04:05+00:00"
    assert wire_timestamp(17, 0.0) == 17
    assert wire_timestamp("2026-01-02T03:04:05Z", 0.0) == "2026-01-02T03:04:05Z"
    with pytest.raises(ValueError, match="timezone"):
        wire_timestamp(datetime(2026, 1, 2), 0.0)
    with pytest.raises(TypeError):
        wire_timestamp(True, 0.0)
