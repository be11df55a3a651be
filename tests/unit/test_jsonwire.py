"""Integers outside the signed 64-bit range are written as exact decimal strings."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from meter import jsonwire


def test_the_bounds_are_int64() -> None:
    doc = {"a": [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, True, 1.5, None, "x"]}
    assert orjson.loads(jsonwire.dumps(doc)) == {
        "a": [2**63 - 1, str(2**63), -(2**63), str(-(2**63) - 1), True, 1.5, None, "x"]
    }


@given(st.integers())
def test_every_integer_round_trips_exactly(n: int) -> None:
    [out] = orjson.loads(jsonwire.dumps([n]))
    assert int(out) == n
    assert isinstance(out, int) == (-(2**63) <= n < 2**63)


def test_response_is_the_compact_document_as_application_json() -> None:
    answer = jsonwire.response({"url": "https://x", "n": 2**64}, status=201)
    assert (answer.status, answer.content_type, answer.charset) == (201, "application/json", None)
    assert answer.body == b'{"url":"https://x","n":"18446744073709551616"}'
