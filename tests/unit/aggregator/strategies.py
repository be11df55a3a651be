"""Hypothesis strategies for usage events."""

from __future__ import annotations

from hypothesis import strategies as st

from meter.events import UsageEvent

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@st.composite
def events(draw: st.DrawFn) -> UsageEvent:
    value = draw(st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False))
    return UsageEvent(
        tenant=draw(st.sampled_from(["acme", "globex"])),
        # Few ids, so duplicates (re-deliveries, retries) are common.
        id=draw(st.sampled_from([f"e{n}" for n in range(40)])),
        customer=draw(st.sampled_from(["c1", "c2"])),
        meter=draw(st.sampled_from(["calls", "seats"])),
        value=format(value.normalize(), "f"),
        # Out of order on purpose: across 4 hours, in any order.
        timestamp_ms=BASE_MS + draw(st.integers(0, 4 * 3_600_000 - 1)),
        received_at_ms=BASE_MS,
        properties=draw(
            st.one_of(st.none(), st.fixed_dictionaries({"user": st.sampled_from(["u1", "u2", 3])}))
        ),
    )


event_lists = st.lists(events(), max_size=60)
