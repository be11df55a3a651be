"""Pure rules of Stripe Billing Meters: value and timestamp checks, windows, aggregation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

MAX_PAST_SECONDS = 35 * 24 * 3600
MAX_FUTURE_SECONDS = 5 * 60
MAX_SIGNIFICANT_DIGITS = 15
MAX_TEXT = 100
WINDOW_SECONDS = {"hour": 3600, "day": 86400}
FORMULAS = ("sum", "count", "last")


class MeterRuleError(ValueError):
    """A rule broken by a meter event; `code` is the Stripe error code, `param` the field."""

    def __init__(self, message: str, code: str, param: str) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


@dataclass(frozen=True)
class Point:
    """One event as aggregation sees it; `seq` is its order of arrival."""

    timestamp: int
    value: Decimal
    seq: int


def parse_value(raw: object, param: str = "payload[value]") -> Decimal:
    """A meter value: a finite number of at most 15 significant digits (Stripe's limit)."""
    text = str(raw).strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise MeterRuleError(
            f"Invalid value: {text!r} is not a number.", "invalid_value", param
        ) from None
    if not value.is_finite():
        raise MeterRuleError(f"Invalid value: {text!r} is not finite.", "invalid_value", param)
    digits = value.normalize().as_tuple().digits if value else (0,)
    if len(digits) > MAX_SIGNIFICANT_DIGITS:
        raise MeterRuleError(
            f"Invalid value: {text!r} has more than {MAX_SIGNIFICANT_DIGITS} significant digits.",
            "invalid_value",
            param,
        )
    return value


def check_timestamp(timestamp: int, now: int, param: str = "timestamp") -> None:
    """Stripe takes events from the past 35 days up to 5 minutes ahead."""
    if timestamp < now - MAX_PAST_SECONDS:
        raise MeterRuleError(
            "Timestamp must be within the past 35 calendar days.",
            "timestamp_too_far_in_past",
            param,
        )
    if timestamp > now + MAX_FUTURE_SECONDS:
        raise MeterRuleError(
            "Timestamp must not be more than 5 minutes in the future.",
            "timestamp_in_future",
            param,
        )


def check_text(value: str, param: str) -> None:
    if not value:
        raise MeterRuleError(f"Missing required param: {param}.", "parameter_missing", param)
    if len(value) > MAX_TEXT:
        raise MeterRuleError(
            f"Invalid string: {param} must be at most {MAX_TEXT} characters.",
            "string_length_exceeded",
            param,
        )


def aggregate(formula: str, points: Iterable[Point]) -> Decimal:
    """sum adds values, count counts events, last takes the latest event's value (0 if none).

    `last` on a tie of timestamps (whole seconds) keeps the FIRST event received: Stripe does
    not document its tie-break, so the emulator never lets a resent or later version win by
    arriving last (README, "Where the emulator differs from Stripe on amounts")."""
    items = list(points)
    if formula == "count":
        return Decimal(len(items))
    if formula == "last":
        if not items:
            return Decimal(0)
        return max(items, key=lambda p: (p.timestamp, -p.seq)).value
    return sum((p.value for p in items), Decimal(0))


def pre_aggregated(points: Iterable[Point], window: str | None) -> list[Point]:
    """A meter with `event_time_window` keeps, per hour/day window, only the event received
    last: "Stripe only uses the most recent meter event within the hourly or daily window for
    aggregation. A newer event sent within the same hourly or daily window overwrites the
    previous one" (docs: record usage, event ingestion). Without a window, every event counts."""
    items = list(points)
    if window is None:
        return items
    size = WINDOW_SECONDS[window]
    latest: dict[int, Point] = {}
    for p in items:
        start = p.timestamp - p.timestamp % size
        if start not in latest or p.seq > latest[start].seq:
            latest[start] = p
    return sorted(latest.values(), key=lambda p: p.seq)


def windows(start: int, end: int, grouping: str | None) -> list[tuple[int, int]]:
    """The summary windows over [start, end): one, or one per hour/day, oldest first."""
    if grouping is None:
        return [(start, end)]
    size = WINDOW_SECONDS[grouping]
    return [(s, min(s + size, end)) for s in range(start, end, size)]


def check_range(start: int, end: int, grouping: str | None) -> None:
    """Bounds must sit on minute boundaries, and on hour/day boundaries when grouping by them."""
    if start >= end:
        raise MeterRuleError(
            "start_time must be before end_time.", "invalid_time_range", "start_time"
        )
    unit = WINDOW_SECONDS[grouping] if grouping else 60
    label = grouping or "minute"
    for name, ts in (("start_time", start), ("end_time", end)):
        if ts % unit:
            raise MeterRuleError(
                f"{name} must be aligned with {label} boundaries.", "invalid_time_range", name
            )


def summarize(
    formula: str, points: Sequence[Point], start: int, end: int, grouping: str | None
) -> list[tuple[int, int, Decimal]]:
    """(start, end, aggregated value) for each window, oldest first."""
    out = []
    for lo, hi in windows(start, end, grouping):
        inside = (p for p in points if lo <= p.timestamp < hi)
        out.append((lo, hi, aggregate(formula, inside)))
    return out


def as_number(value: Decimal) -> int | float:
    """Stripe sends aggregated values as JSON numbers; integers stay integers."""
    return int(value) if value == value.to_integral_value() else float(value)
