from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meter.errors import InvalidRequest
from meter.events import UsageEvent
from meter.ingest.endpoint import parse_body
from meter.ingest.validation import (
    Limits,
    Rejection,
    parse_timestamp_ms,
    plain_events,
    validate,
)

NOW_MS = 1_795_000_000_000  # 2026-11-18T...Z
LIMITS = Limits(
    late_window_ms=48 * 3600 * 1000, future_tolerance_ms=300_000, max_properties_bytes=4096
)


def check(raw: Any) -> UsageEvent | Rejection:
    return validate(raw, tenant="acme", now_ms=NOW_MS, limits=LIMITS)


def base(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"id": "e1", "customer": "cus_1", "meter": "api_calls"}
    event.update(changes)
    return {k: v for k, v in event.items() if v is not ...}


def test_minimal_event_gets_defaults() -> None:
    event = check(base())
    assert isinstance(event, UsageEvent)
    assert (event.value, event.timestamp_ms, event.received_at_ms) == ("1", NOW_MS, NOW_MS)
    assert (event.tenant, event.id, event.customer, event.meter) == (
        "acme",
        "e1",
        "cus_1",
        "api_calls",
    )
    assert event.properties is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([], "invalid_event"),
        ("e1", "invalid_event"),
        (base(id=...), "missing_id"),
        (base(id=""), "invalid_id"),
        (base(id=7), "invalid_id"),
        (base(id="x" * 101), "id_too_long"),
        (base(extra=1), "unknown_field"),
        (base(customer=...), "missing_customer"),
        (base(customer=["c"]), "invalid_customer"),
        (base(customer="c" * 101), "customer_too_long"),
        (base(meter=...), "missing_meter"),
        (base(meter=""), "invalid_meter"),
        (base(meter="m" * 101), "meter_too_long"),
        (base(value="3"), "invalid_value"),
        (base(value=True), "invalid_value"),
        (base(value=None), "invalid_value"),
        (base(value=-1), "invalid_value"),
        (base(value=0.12345678901234567), "too_many_digits"),
        (base(value=1234567890123456), "too_many_digits"),
        (base(value=1e15), "too_many_digits"),
        (base(timestamp="yesterday"), "invalid_timestamp"),
        (base(timestamp="2026-11-18T10:00:00"), "invalid_timestamp"),  # no offset
        (base(timestamp="2026-11-18"), "invalid_timestamp"),
        (base(timestamp=True), "invalid_timestamp"),
        (base(timestamp=-5), "invalid_timestamp"),
        (base(timestamp=[1]), "invalid_timestamp"),
        (base(timestamp=NOW_MS / 1000 - 48 * 3600 - 1), "too_late"),
        (base(timestamp=NOW_MS / 1000 + 301), "in_future"),
        (base(properties=[1]), "invalid_properties"),
        # U+0000 fits JSON but not Postgres text or jsonb, where the aggregator would choke on it.
        (base(id="a\x00b"), "invalid_id"),
        (base(customer="\x00"), "invalid_customer"),
        (base(meter="m\x00"), "invalid_meter"),
        (base(properties={"k": "v\x00"}), "invalid_properties"),
        (base(properties={"k\x00": 1}), "invalid_properties"),
        (base(properties={"k": [{"deep": "\x00"}]}), "invalid_properties"),
        (base(properties={"k": "v" * 4100}), "properties_too_large"),
    ],
)
def test_each_rejection_reason(raw: Any, reason: str) -> None:
    result = check(raw)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.message
    if isinstance(raw, dict) and isinstance(check(base(id=raw.get("id", ...))), UsageEvent):
        assert result.id == raw["id"]


def test_unknown_field_is_named() -> None:
    result = check(base(timestmp=5))
    assert isinstance(result, Rejection)
    assert "timestmp" in result.message


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (0, "0"),
        (0.5, "0.5"),
        (2.50, "2.5"),
        (100, "100"),
        (1e2, "100"),
        (123456789012345, "123456789012345"),
        (0.000001, "0.000001"),
        (12345.6789, "12345.6789"),
    ],
)
def test_value_is_kept_as_exact_decimal_text(value: float, text: str) -> None:
    event = check(base(value=value))
    assert isinstance(event, UsageEvent)
    assert event.value == text


def test_late_window_boundaries() -> None:
    oldest_s = (NOW_MS - LIMITS.late_window_ms) / 1000
    assert isinstance(check(base(timestamp=oldest_s)), UsageEvent)
    assert isinstance(check(base(timestamp=oldest_s - 0.001)), Rejection)
    newest_s = (NOW_MS + LIMITS.future_tolerance_ms) / 1000
    assert isinstance(check(base(timestamp=newest_s)), UsageEvent)
    assert isinstance(check(base(timestamp=newest_s + 0.001)), Rejection)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-18T10:00:00Z",
        "2026-11-18T10:00:00.123+00:00",
        "2026-11-18T12:00:00+02:00",
        "2026-11-18t10:00:00z",
    ],
)
def test_rfc3339_timestamps(text: str) -> None:
    parsed = parse_timestamp_ms(text)
    assert parsed is not None
    assert parsed // 1000 == 1_794_996_000  # 2026-11-18T10:00:00Z


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        # The last instant of an hour (and of a billing period) stays in it: floored, not rounded.
        ("2026-11-18T23:59:59.9996Z", 1_795_046_399_999),
        ("2026-11-18T23:59:59.9999999Z", 1_795_046_399_999),
        ("2026-11-19T01:59:59.9995+02:00", 1_795_046_399_999),
        ("2026-11-18T23:59:59.0004Z", 1_795_046_399_000),
        (1_795_046_399.9996, 1_795_046_399_999),
        (1_795_046_399.9999, 1_795_046_399_999),
        # Decimal, not binary, arithmetic: 1.0005 × 1000 is 1000.4999… as doubles.
        (1.0005, 1000),
        (1.0015, 1001),
        (1.005, 1005),
        (1_795_046_399.001, 1_795_046_399_001),
        (1_795_046_399, 1_795_046_399_000),
    ],
)
def test_timestamps_floor_to_the_millisecond(value: object, ms: int) -> None:
    assert parse_timestamp_ms(value) == ms


def test_properties_kept() -> None:
    event = check(base(properties={"region": "eu", "n": 2}))
    assert isinstance(event, UsageEvent)
    assert event.properties == {"region": "eu", "n": 2}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=120),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values | st.text(min_size=1, max_size=110),
        "customer": json_values | st.text(min_size=1, max_size=5),
        "meter": json_values | st.text(min_size=1, max_size=5),
        "value": json_values,
        "timestamp": json_values | st.floats(1.79e9, 1.8e9),
        "properties": json_values,
    },
)


@settings(max_examples=400)
@given(event_like | json_values)
def test_validator_never_raises_and_accepts_only_sound_events(raw: Any) -> None:
    result = check(raw)
    if isinstance(result, UsageEvent):
        assert 1 <= len(result.id) <= 100
        value = Decimal(result.value)
        assert value >= 0
        assert len(value.normalize().as_tuple().digits) <= 15
        assert NOW_MS - LIMITS.late_window_ms <= result.timestamp_ms
        assert result.timestamp_ms <= NOW_MS + LIMITS.future_tolerance_ms
        assert UsageEvent.decode(result.encode()) == result
        assert "\x00" not in result.id + result.customer + result.meter
        assert b"\\u0000" not in orjson.dumps(result.properties)
    else:
        assert result.reason
        assert result.message


@given(st.binary(max_size=200) | json_values.map(orjson.dumps))
def test_parse_body_raises_only_invalid_request(body: bytes) -> None:
    try:
        items: Any = parse_body(body, 1000)
    except InvalidRequest:
        items = None
    assert items is None or isinstance(items, list)


def test_parse_body_names_the_offset() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(b'[{"id": "a",}]', 1000)
    assert "line 1" in info.value.message
    assert "byte offset 11" in info.value.message


def test_parse_body_caps_the_batch() -> None:
    with pytest.raises(InvalidRequest, match="1001 events"):
        parse_body(orjson.dumps([{}] * 1001), 1000)
    assert len(parse_body(orjson.dumps([{}] * 1000), 1000)) == 1000


@given(st.floats(0, 1e16) | st.integers(0, 10**16))
def test_value_fast_path_agrees_with_exact_decimal_rule(value: float) -> None:
    dec = (Decimal(value) if isinstance(value, int) else Decimal(repr(value))).normalize()
    sound = len(dec.as_tuple().digits) <= 15 and dec.adjusted() < 15
    result = check(base(value=value))
    if sound:
        assert isinstance(result, UsageEvent)
        assert Decimal(result.value) == dec
        assert result.value == format(dec, "f")
    else:
        assert isinstance(result, Rejection)
        assert result.reason == "too_many_digits"


_MISSING = object()
_name = st.one_of(
    st.text(min_size=1, max_size=100),
    st.sampled_from(["", "a\x00b", "x" * 101, 5, None, True, _MISSING]),
)


@settings(max_examples=1000)
@given(
    event_id=_name,
    customer=_name,
    meter=_name,
    value=st.one_of(
        st.integers(-3, 3),
        st.sampled_from([10**15 - 1, 10**15, True, False, 1.5, -1.0, None, "1", _MISSING]),
    ),
)
def test_plain_shape_fast_path_answers_as_the_full_checks(
    event_id: object, customer: object, meter: object, value: object
) -> None:
    # validate() accepts the common shape in one pass; it must answer exactly as the full
    # checks would, for acceptance and every rejection alike.
    from meter.ingest.validation import _validate

    fields = {"id": event_id, "customer": customer, "meter": meter, "value": value}
    raw = {k: v for k, v in fields.items() if v is not _MISSING}
    assert validate(raw, tenant="acme", now_ms=NOW_MS, limits=LIMITS) == _validate(
        raw, "acme", NOW_MS, LIMITS
    )


MAX_EVENTS = 4


def item_by_item(body: bytes) -> list[UsageEvent | Rejection] | str:
    """What the endpoint answers by parsing the body and validating each item on its own."""
    try:
        items = parse_body(body, MAX_EVENTS)
    except InvalidRequest as exc:
        return exc.message
    return [check(raw) for raw in items]


def plain(body: bytes) -> list[UsageEvent] | None:
    return plain_events(body, tenant="acme", now_ms=NOW_MS, max_events=MAX_EVENTS)


_item = st.fixed_dictionaries(
    {},
    optional={
        "id": _name,
        "customer": _name,
        "meter": _name,
        "value": st.one_of(
            st.integers(-3, 3),
            st.sampled_from([10**15 - 1, 10**15, 2**64, True, 1.0, 1.5, -1.0, None, "1"]),
        ),
        "timestamp": st.sampled_from([NOW_MS // 1000, "2026-11-18T00:00:00Z", None]),
        "properties": st.sampled_from([{}, {"model": "large"}, None, []]),
        "bogus": st.just(1),
    },
).map(lambda d: {k: v for k, v in d.items() if v is not _MISSING})
_plain_item = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=100),
        "customer": st.text(min_size=1, max_size=100),
        "meter": st.text(min_size=1, max_size=100),
    },
    optional={"value": st.integers(0, 10**15 - 1)},
)


def _body(doc: object) -> bytes:
    try:
        return orjson.dumps(doc)
    except TypeError:  # a lone surrogate, which no client can send as UTF-8 either
        return b""


@settings(max_examples=1000)
@given(st.one_of(_item, st.lists(_item, max_size=MAX_EVENTS + 1)))
def test_the_plain_batch_decoder_answers_as_item_by_item_validation(doc: object) -> None:
    # Whatever the one-pass decoder accepts is what parsing and validating each item gives;
    # everything else (None) takes that path itself.
    body = _body(doc)
    events = plain(body)
    if events is not None:
        assert events == item_by_item(body)


@settings(max_examples=300)
@given(st.one_of(_plain_item, st.lists(_plain_item, max_size=MAX_EVENTS)))
def test_plain_events_take_the_one_pass_decoder(doc: object) -> None:
    body = _body(doc)
    expected = item_by_item(body)
    if body and all(type(e) is UsageEvent for e in expected):  # no NUL in a name
        assert plain(body) == expected


@pytest.mark.parametrize(
    ("body", "one_pass"),
    [
        (b'{"id": "a", "id": "b", "customer": "c", "meter": "m"}', True),  # the last one counts
        (b'{"id": "a", "customer": "c", "meter": "m", "value": 3}  \n', True),
        (b'[{"id": "a", "customer": "c\\u00e9", "meter": "m"}]', True),
        (b"[]", True),
        (b'{"id": "a", "customer": "c\\u0000", "meter": "m"}', False),
        (b'{"id": "a", "customer": "c", "meter": "m", "value": 3.0}', False),
        (b'{"id": "\\ud800", "customer": "c", "meter": "m"}', False),
        (b'\xef\xbb\xbf{"id": "a", "customer": "c", "meter": "m"}', False),
        (b'[{"id": "a", "customer": "c", "meter": "m"}] x', False),
        (
            b"["
            + b",".join([b'{"id": "a", "customer": "c", "meter": "m"}'] * (MAX_EVENTS + 1))
            + b"]",
            False,
        ),
    ],
)
def test_the_plain_batch_decoder_on_the_edges_of_json(body: bytes, one_pass: bool) -> None:
    events = plain(body)
    assert (events is not None) == one_pass
    if events is not None:
        assert events == item_by_item(body)
