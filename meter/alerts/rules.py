"""An alert rule's fields, checked one by one (pure: the API and the CLI share it).

Every field has its own 400 naming it (`param`), so a client knows which one to fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from meter import dimensions
from meter.errors import InvalidRequest

UNITS: Final = "units"
AMOUNT: Final = "amount"
PERCENT_OF_LIMIT: Final = "percent_of_limit"
PROJECTED: Final = "projected"
KINDS: Final = (UNITS, AMOUNT, PERCENT_OF_LIMIT, PROJECTED)
MAX_THRESHOLDS: Final = 10
# Far above any usage or amount a period can hold, and small enough for Postgres numeric and
# exact Decimal comparisons.
MAX_THRESHOLD: Final = Decimal(10) ** 18
MAX_RULES_PER_TENANT: Final = 1000
MAX_ID_LENGTH: Final = 255
CREATE_FIELDS: Final = frozenset(
    {"customer", "meter", "filter", "kind", "thresholds", "hard_limit"}
)
MAX_FILTER_VALUE: Final = 500
UPDATE_FIELDS: Final = frozenset({"thresholds", "hard_limit"})


@dataclass(frozen=True, slots=True)
class RuleSpec:
    customer: str | None
    meter: str | None  # None: the whole invoice (an `amount` rule only)
    kind: str
    thresholds: tuple[Decimal, ...]
    hard_limit: bool
    filter: tuple[tuple[str, str], ...] = ()


def _unknown(doc: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown field `{unknown[0]}`", param=unknown[0])


def _text(doc: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        need = "is required: " if value is None else "must be "
        raise InvalidRequest(
            f"`{name}` {need}a string of 1..{MAX_ID_LENGTH} characters"
            + (
                f" (only an `{AMOUNT}` rule may leave it out: it then measures the whole invoice)"
                if name == "meter" and value is None
                else ""
            ),
            param=name,
        )
    if "\x00" in value:
        raise InvalidRequest(f"`{name}` must not contain U+0000 (NUL)", param=name)
    return value


def _threshold(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError
    number = Decimal(str(value))
    if not number.is_finite() or not 0 < number <= MAX_THRESHOLD:
        raise ValueError
    return number


def thresholds(value: Any, kind: str) -> tuple[Decimal, ...]:
    """Positive, distinct numbers (or decimal strings), returned ascending; `amount` ones are
    integers (minor units)."""
    if not isinstance(value, list) or not 0 < len(value) <= MAX_THRESHOLDS:
        raise InvalidRequest(
            f"`thresholds` is required: a list of 1..{MAX_THRESHOLDS} positive numbers",
            param="thresholds",
        )
    out: list[Decimal] = []
    for n, raw in enumerate(value):
        try:
            number = _threshold(raw)
        except (ValueError, InvalidOperation):
            raise InvalidRequest(
                f"`thresholds[{n}]` must be a number in (0, {MAX_THRESHOLD}]",
                param=f"thresholds[{n}]",
            ) from None
        if kind == AMOUNT and number != number.to_integral_value():
            raise InvalidRequest(
                f"`thresholds[{n}]` must be an integer amount in the currency's minor unit",
                param=f"thresholds[{n}]",
            )
        out.append(number.normalize())
    if len(set(out)) != len(out):
        raise InvalidRequest("`thresholds` must be distinct", param="thresholds")
    return tuple(sorted(out))


def _hard_limit(value: Any, kind: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest("`hard_limit` must be true or false", param="hard_limit")
    if value and kind == PROJECTED:
        raise InvalidRequest(
            "`hard_limit` blocks usage that happened; a `projected` rule cannot have one",
            param="hard_limit",
        )
    return value


def _is_key(key: str) -> bool:
    try:
        return dimensions.parse_keys([key]) == (key,)
    except InvalidRequest:
        return False


def dimension_filter(value: Any, kind: str) -> tuple[tuple[str, str], ...]:
    """`{"model": "large"}`: up to 3 dimension keys (docs/dimensions.md) with their values, as
    sorted pairs; only a `units` rule takes one (an amount or a projection prices the whole
    meter, and a limit is on the whole meter)."""
    if value is None or value == {}:
        return ()
    if not isinstance(value, dict):
        raise InvalidRequest("`filter` must be an object of dimension values", param="filter")
    if kind != UNITS:
        raise InvalidRequest("a `filter` goes with `units` rules only", param="filter")
    if len(value) > dimensions.MAX_KEYS:
        raise InvalidRequest(f"at most {dimensions.MAX_KEYS} filter keys", param="filter")
    for key, text in value.items():
        if not _is_key(key):
            raise InvalidRequest(
                f"filter key {key[:80]!r} is not a dimension key: {dimensions.KEY_CHARSET}",
                param="filter",
            )
        if not isinstance(text, str) or not 0 < len(text) <= MAX_FILTER_VALUE:
            raise InvalidRequest(
                f"`filter.{key}` must be a string of 1..{MAX_FILTER_VALUE} characters",
                param="filter",
            )
    return tuple(sorted(value.items()))


def _no_hard_limit_with(
    pairs: tuple[tuple[str, str], ...], doc: Mapping[str, Any]
) -> tuple[tuple[str, str], ...]:
    if pairs and doc.get("hard_limit") is True:
        raise InvalidRequest(
            "a hard limit blocks the whole meter: it goes with rules without a `filter`",
            param="hard_limit",
        )
    return pairs


def parse_create(doc: Mapping[str, Any]) -> RuleSpec:
    _unknown(doc, CREATE_FIELDS)
    kind = doc.get("kind")
    if kind not in KINDS:
        raise InvalidRequest(f"`kind` must be one of {', '.join(KINDS)}", param="kind")
    # An `amount` rule without a meter measures the whole invoice; every other kind is of a meter.
    meter = _text(doc, "meter", required=kind != AMOUNT)
    if meter is None and doc.get("hard_limit") is True:
        raise InvalidRequest(
            "a hard limit blocks one meter: a rule on the whole invoice (no `meter`) cannot "
            "have one",
            param="hard_limit",
        )
    return RuleSpec(
        customer=_text(doc, "customer", required=False),
        meter=meter,
        kind=kind,
        thresholds=thresholds(doc.get("thresholds"), kind),
        hard_limit=_hard_limit(doc.get("hard_limit"), kind),
        filter=_no_hard_limit_with(dimension_filter(doc.get("filter"), kind), doc),
    )


def parse_update(
    doc: Mapping[str, Any], kind: str, current: Sequence[Decimal], hard_limit: bool
) -> tuple[tuple[Decimal, ...], bool]:
    """New thresholds and hard_limit of a rule of `kind` (each kept when absent)."""
    _unknown(doc, UPDATE_FIELDS)
    if not doc:
        raise InvalidRequest("nothing to update: send `thresholds` and/or `hard_limit`")
    new = thresholds(doc["thresholds"], kind) if "thresholds" in doc else tuple(current)
    hard = _hard_limit(doc["hard_limit"], kind) if "hard_limit" in doc else hard_limit
    return new, hard


def crossed(rule_thresholds: Sequence[Decimal], value: Decimal) -> list[Decimal]:
    """The thresholds `value` has reached (a threshold is crossed at equality)."""
    return [t for t in rule_thresholds if value >= t]


def percent(used: Decimal, limit: Decimal) -> Decimal | None:
    """`used` as a percentage of `limit`; None without a positive limit."""
    return None if limit <= 0 else used * 100 / limit


def firing_subject(rule: str, customer: str, period_start: int, threshold: Decimal) -> str:
    """What a threshold event is about: one per (rule, customer, period, threshold)."""
    return f"{rule}/{customer}/{period_start}/{threshold}"


def limit_subject(rule: str, customer: str, period_start: int) -> str:
    """What a limit event is about (reached and cleared are two types of one subject)."""
    return f"{rule}/{customer}/{period_start}/limit"


def number(value: Decimal) -> str:
    """A threshold or value as the answers and events write it: plain decimal text."""
    return format(value.normalize(), "f")
