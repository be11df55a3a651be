"""The stream payload: what UsageEvent.encode writes, checked against orjson as the oracle."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from meter.events import UsageEvent, json_text

_text = st.text(max_size=40)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=20,
)
_events = st.builds(
    UsageEvent,
    tenant=_text,
    id=_text,
    customer=_text,
    meter=_text,
    value=st.sampled_from(["0", "1", "0.25", "999999999999999"]),
    timestamp_ms=st.integers(0, 10**13),
    received_at_ms=st.integers(0, 10**13),
    properties=st.none() | st.dictionaries(_text, _json, max_size=4),
)


def _loads_or_none(doc: Any) -> Any:
    try:
        return orjson.loads(orjson.dumps(doc))
    except TypeError:  # a lone surrogate: no client can send one (ingest reads UTF-8)
        return None


@settings(max_examples=300)
@given(_events)
def test_a_payload_is_the_json_orjson_writes_and_decodes_to_the_event(event: UsageEvent) -> None:
    expected = _loads_or_none((1, *event))
    if expected is None:
        return
    payload = event.encode()
    assert orjson.loads(payload) == expected
    assert UsageEvent.decode(payload) == event


@settings(max_examples=300)
@given(_events)
def test_a_payload_holds_its_customer_as_json_text_writes_it(event: UsageEvent) -> None:
    # The usage API's scan skips entries without json_text(customer) in them, undecoded.
    if _loads_or_none(event.customer) is None:
        return
    assert json_text(event.customer) == orjson.dumps(event.customer)
    assert json_text(event.customer) in event.encode()
