"""Query parameters of the usage API, validated into plain values. Pure.

Every error names its parameter (`InvalidRequest(param=…)`), so the client sees which one to fix.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from meter import dimensions
from meter.errors import InvalidRequest

CURRENT = "current"
PREVIOUS = "previous"
GRANULARITIES = {"hour": 3600, "day": 86400}
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
# A history request spans at most this much: bounds the rows one page may have to group.
MAX_SPAN_S = 400 * 86400
DEFAULT_SPAN_S = 7 * 86400
# Instants are taken from 1970 up to (not including) 9999-01-01: periods and buckets around them
# stay inside the years Python's datetime and Postgres' timestamptz both hold.
MAX_INSTANT = int(dt.datetime(9999, 1, 1, tzinfo=dt.UTC).timestamp())
_MAX_INSTANT_DIGITS = len(str(MAX_INSTANT))
_ASCII_DIGITS = re.compile(r"[0-9]+")


def _digits(text: str, max_digits: int) -> int | None:
    """The value of a string of ASCII digits (str.isdigit() also takes "²" and "٣"), or None;
    long strings are refused before int() parses them (or refuses them past 4,300 digits)."""
    if len(text) > max_digits or _ASCII_DIGITS.fullmatch(text) is None:
        return None
    return int(text)


def instant(raw: str, param: str) -> int:
    """Unix seconds from unix seconds or ISO 8601 (a date, or a time; naive means UTC)."""
    text = raw.strip()
    at = _digits(text, _MAX_INSTANT_DIGITS)
    if at is None:
        try:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest(
                f"`{param}` must be unix seconds or an ISO 8601 time, got {raw[:40]!r}",
                param=param,
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        try:
            at = int(when.timestamp())
        except (OverflowError, ValueError):  # a zone pushes 0001-01-01 before the year 1
            at = -1
    if not 0 <= at < MAX_INSTANT:
        raise InvalidRequest(
            f"`{param}` must be between 1970-01-01 and 9999-01-01 (unix 0..{MAX_INSTANT - 1})",
            param=param,
        )
    return at


def period(query: Mapping[str, str]) -> str | int:
    """`period`: "current" (default), "previous", or an instant inside the wanted period."""
    raw = query.get("period", CURRENT)
    if raw in (CURRENT, PREVIOUS):
        return raw
    return instant(raw, "period")


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    start: int
    end: int
    step: int
    granularity: str
    meter: str | None
    limit: int
    after: tuple[str, int] | None  # (meter, bucket start) of the last row already returned
    breakdown: Breakdown = field(default_factory=lambda: Breakdown())


@dataclass(frozen=True, slots=True)
class Breakdown:
    """`group_by=model,region` and `filter[model]=large` (docs/dimensions.md)."""

    group_by: tuple[str, ...] = ()
    filters: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.group_by or self.filters)


MAX_FILTER_VALUE = 500


def breakdown(query: Mapping[str, str]) -> Breakdown:
    """The dimension parameters of a usage or history request; InvalidRequest names the bad
    one. Keys follow the rule of dimension keys; at most 3 of each."""
    group_by = dimensions.parse_keys(query.get("group_by", ""))
    filters: dict[str, str] = {}
    for name, value in query.items():
        if not name.startswith("filter"):
            continue
        if not (name.startswith("filter[") and name.endswith("]")):
            raise InvalidRequest("a filter is `filter[<key>]=<value>`", param=name[:80])
        (key,) = dimensions.parse_keys([name[7:-1]]) or ("",)
        if not key:
            raise InvalidRequest("a filter names its key: `filter[<key>]`", param=name[:80])
        if key in filters:
            raise InvalidRequest(f"`filter[{key}]` is given twice", param=name)
        if not 0 < len(value) <= MAX_FILTER_VALUE:
            raise InvalidRequest(f"`filter[{key}]` is 1..{MAX_FILTER_VALUE} characters", param=name)
        filters[key] = value
    if len(filters) > dimensions.MAX_KEYS:
        raise InvalidRequest(f"at most {dimensions.MAX_KEYS} filters", param="filter")
    return Breakdown(group_by, tuple(sorted(filters.items())))


def history(query: Mapping[str, str], now: int) -> HistoryQuery:
    """`from`, `to` (default: the last 7 days up to now), `granularity` (hour|day, default hour),
    `meter`, `limit` (1..1000) and `cursor` (from the previous page's `next_cursor`)."""
    granularity = query.get("granularity", "hour")
    if granularity not in GRANULARITIES:
        raise InvalidRequest("`granularity` must be hour or day", param="granularity")
    step = GRANULARITIES[granularity]
    end = instant(query["to"], "to") if "to" in query else now
    start = instant(query["from"], "from") if "from" in query else end - DEFAULT_SPAN_S
    # Whole buckets only: `from` rounds down and `to` up to the granularity (UTC).
    start -= start % step
    end += -end % step
    if end <= start:
        raise InvalidRequest("`to` must be after `from`", param="to")
    if end - start > MAX_SPAN_S:
        raise InvalidRequest(f"`from`..`to` spans at most {MAX_SPAN_S // 86400} days", param="from")
    meter = query.get("meter") or None
    limit = _digits(query.get("limit", str(DEFAULT_LIMIT)), len(str(MAX_LIMIT)))
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"`limit` must be an integer in 1..{MAX_LIMIT}", param="limit")
    after = decode_cursor(query["cursor"]) if "cursor" in query else None
    return HistoryQuery(start, end, step, granularity, meter, limit, after, breakdown(query))


def encode_cursor(meter: str, bucket_start: int) -> str:
    """An opaque page cursor: the (meter, bucket start) of the last row of a page."""
    raw = f"{bucket_start}\x00{meter}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, meter = raw.split("\x00", 1)
        start = _digits(at, _MAX_INSTANT_DIGITS)
        if start is None or "\x00" in meter:  # Postgres text cannot hold NUL
            raise ValueError(cursor)
        return meter, start
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("`cursor` is not a cursor this API returned", param="cursor") from None
