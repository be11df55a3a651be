"""Touches split into stream entries of bounded size, and read back whole."""

from __future__ import annotations

from meter.core import touches


def test_a_large_flush_is_split_into_bounded_entries_that_decode_to_its_touches() -> None:
    flushed = [("acme", f"c-{i}", "calls") for i in range(20_000)]
    payloads = touches.entries(flushed + flushed[:50])  # repeated touches count once
    assert len(payloads) == 20_000 // touches.TOUCHES_PER_ENTRY
    decoded = [touches.decode(p) for p in payloads]
    assert all(len(d) <= touches.TOUCHES_PER_ENTRY for d in decoded)
    assert sorted(t for d in decoded for t in d) == sorted(flushed)


def test_no_touch_no_entry_and_a_few_in_one() -> None:
    assert touches.entries([]) == []
    assert len(touches.entries([("acme", "c-1", "calls"), ("acme", "c-2", "calls")])) == 1


def test_a_malformed_entry_is_no_touch() -> None:
    assert touches.decode(b"{") == []
    assert touches.decode(b'{"a": 1}') == []
    assert touches.decode(b'[["acme", "c-1"], ["acme", "c-1", "calls"]]') == [
        ("acme", "c-1", "calls")
    ]
