"""The explicit nesting limit of `properties` (meter/ingest/validation.py): pure."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from meter.errors import InvalidRequest
from meter.events import UsageEvent
from meter.ingest.endpoint import parse_body
from meter.ingest.validation import MAX_PROPERTIES_DEPTH, Limits, Rejection, too_deep, validate

NOW_MS = 1_795_000_000_000
LIMITS = Limits(
    late_window_ms=48 * 3600 * 1000, future_tolerance_ms=300_000, max_properties_bytes=4096
)


def nested(levels: int, leaf: Any = 1, *, arrays: bool = False) -> Any:
    """`levels` levels of objects (or arrays) around `leaf`."""
    value = leaf
    for _ in range(levels):
        value = [value] if arrays else {"k": value}
    return value


def check(properties: Any) -> UsageEvent | Rejection:
    raw = {"id": "e1", "customer": "c", "meter": "m", "properties": properties}
    return validate(raw, tenant="acme", now_ms=NOW_MS, limits=LIMITS)


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        (1, 0, False),
        ("text", 0, False),
        ({}, 0, True),
        ({}, 1, False),
        ({"a": 1, "b": "x"}, 1, False),
        ({"a": {"b": 1}}, 1, True),
        ({"a": [1, 2]}, 2, False),
        ({"a": [1, {"b": 1}]}, 2, True),
        (nested(8), 8, False),
        (nested(9), 8, True),
        (nested(9, arrays=True), 8, True),
    ],
)
def test_too_deep(value: Any, limit: int, expected: bool) -> None:
    assert too_deep(value, limit) is expected


def test_the_limit_is_eight_levels() -> None:
    assert MAX_PROPERTIES_DEPTH == 8
    assert isinstance(check(nested(8)), UsageEvent)
    rejection = check(nested(9))
    assert isinstance(rejection, Rejection)
    assert (rejection.reason, rejection.id) == ("properties_too_deep", "e1")
    assert "8 levels" in rejection.message


def test_deep_but_small_properties_are_rejected_not_an_error() -> None:
    # 300 levels fit in 4 KiB and parse, but orjson cannot serialize them (its limit is 254):
    # without the depth check, measuring the size raised and the request answered 500.
    deep = nested(300)
    assert len(orjson.dumps(nested(200))) < 4096
    with pytest.raises(TypeError):
        orjson.dumps(deep)
    rejection = check(deep)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "properties_too_deep"


def test_a_body_nested_past_the_parsers_limit_is_a_client_error() -> None:
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_body(b"[" * 2000 + b"]" * 2000, 1000)
