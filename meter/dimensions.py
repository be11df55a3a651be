"""Meter dimensions: which property keys break a meter's usage down, and the combination text
an event is folded under. Pure (docs/dimensions.md).

A combination is stored as text (usage_rollups.dims): '' for a meter without dimensions,
`_other` for usage beyond the cardinality guard, else the JSON object of the declared keys with
their values, keys sorted, so one set of values always gives one text.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from meter.errors import InvalidRequest

S = TypeVar("S", bound=Hashable)

MAX_KEYS = 3
NO_DIMENSIONS = ""
OTHER = "_other"
NONE = "none"  # the value of a declared key an event does not carry (or carries as null)
DEFAULT_MAX_COMBINATIONS = 1000
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
KEY_CHARSET = "1..64 of A-Z a-z 0-9 _ . - (starting with a letter or digit)"


def parse_keys(text: str | Sequence[str]) -> tuple[str, ...]:
    """Dimension keys from `model,region` (or a list); InvalidRequest says what is wrong.
    An empty text or list means "no dimensions"."""
    raw = text.split(",") if isinstance(text, str) else list(text)
    keys = tuple(k.strip() if isinstance(k, str) else k for k in raw)
    keys = tuple(k for k in keys if k != "")
    for k in keys:
        if not isinstance(k, str) or _KEY.fullmatch(k) is None:
            raise InvalidRequest(
                f"dimension key {str(k)[:80]!r} is not a key: {KEY_CHARSET}", param="dimensions"
            )
    if len(set(keys)) != len(keys):
        raise InvalidRequest("dimension keys repeat", param="dimensions")
    if len(keys) > MAX_KEYS:
        raise InvalidRequest(
            f"at most {MAX_KEYS} dimension keys per meter, got {len(keys)}", param="dimensions"
        )
    return keys


def value_text(value: Any) -> str:
    """A property value as a dimension value: strings as they are, null as `none`, anything
    else as its JSON text (so 1 and true stay distinct from each other)."""
    if value is None:
        return NONE
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def combination(properties: Mapping[str, Any] | None, keys: Sequence[str]) -> str:
    """The combination text of an event with these properties under these (sorted) keys."""
    if not keys:
        return NO_DIMENSIONS
    props = properties or {}
    return orjson.dumps({k: value_text(props.get(k)) for k in keys}).decode()


def values_of(dims: str, keys: Sequence[str]) -> dict[str, str]:
    """The value of each of `keys` in a stored combination: `_other` for every key of the
    overflow combination, `none` for a key the combination does not hold."""
    if dims == OTHER:
        return dict.fromkeys(keys, OTHER)
    held: dict[str, str] = orjson.loads(dims) if dims else {}
    return {k: held.get(k, NONE) for k in keys}


@dataclass(frozen=True, slots=True)
class Versions:
    """A meter's dimension definitions over time: keys (sorted) from each start, in order."""

    starts_ms: tuple[int, ...]
    keys: tuple[tuple[str, ...], ...]

    def at(self, ts_ms: int) -> tuple[str, ...]:
        """The keys in effect at `ts_ms` (none before the first definition)."""
        i = bisect.bisect_right(self.starts_ms, ts_ms) - 1
        return self.keys[i] if i >= 0 else ()


def index_versions(
    rows: Sequence[tuple[str, str, dt.datetime, Sequence[str]]],
) -> dict[tuple[str, str], Versions]:
    """(tenant, meter) → Versions, from (tenant, meter, effective_from, keys) rows in any order.
    Meters whose every version has no keys are left out: they have no dimensions."""
    grouped: dict[tuple[str, str], list[tuple[int, tuple[str, ...]]]] = {}
    for tenant, meter, start, keys in rows:
        ms = int(start.timestamp() * 1000)
        grouped.setdefault((tenant, meter), []).append((ms, tuple(sorted(keys))))
    out: dict[tuple[str, str], Versions] = {}
    for name, versions in grouped.items():
        if not any(keys for _, keys in versions):
            continue
        versions.sort()
        out[name] = Versions(tuple(s for s, _ in versions), tuple(k for _, k in versions))
    return out


def admit(
    wanted: Sequence[tuple[S, str]],
    known: Collection[tuple[S, str]],
    sizes: Mapping[S, int],
    limit: int,
) -> tuple[dict[tuple[S, str], str], list[tuple[S, str]]]:
    """The cardinality guard, in the order `wanted` lists (set, combination) pairs (the stream
    order of their first events): a pair in `known` (admitted already) stays; a new one is
    admitted while its set (of `sizes[set]` combinations so far) holds fewer than `limit`, else
    it becomes `_other`. Returns each pair's folded combination and the pairs newly admitted,
    in order. Pure and sequential, so the same committed sets and the same events always give
    the same answer, however the events are cut into batches."""
    grown = dict(sizes)
    out: dict[tuple[S, str], str] = {}
    new: list[tuple[S, str]] = []
    for pair in wanted:
        if pair in out:
            continue
        set_key, dims = pair
        if pair in known:
            out[pair] = dims
        elif grown.get(set_key, 0) < limit:
            grown[set_key] = grown.get(set_key, 0) + 1
            out[pair] = dims
            new.append(pair)
        else:
            out[pair] = OTHER
    return out, new


def shared_admissions(limit: int) -> int:
    """B: the most new combinations a flush may admit into one set under a *shared* set lock.
    A function of the limit alone, so every flush bounds every other one alike."""
    return max(1, limit // 64)


def shared_admission_holds(size: int, writers: int, limit: int) -> bool:
    """Whether a flush holding its set's lock shared may admit (up to `shared_admissions`) into
    a set of `size` combinations read after taking that lock, with `writers` (N) bounding the
    flushes in flight; else the set's lock must be taken exclusively.

    Sound: at any commit take, among the committed flushes that admitted into the set, R the one
    that read its size last. Every admission committed after R's read is of a flush that held
    the set's lock at that read (it took the lock before its own, earlier, read and holds it to
    commit): none if R held it exclusively; else only shared holders, at most N of them with R,
    each admitting at most B. So the set holds at most size_R + N·B ≤ limit."""
    return size + writers * shared_admissions(limit) <= limit


def check_effective_from(when: dt.datetime, now: dt.datetime) -> dt.datetime:
    """A change's start: never in the past, so that no usage already folded (and perhaps
    billed) is meant to have another combination. InvalidRequest otherwise."""
    if when.tzinfo is None:
        raise InvalidRequest("effective_from needs a time zone (e.g. Z)", param="effective_from")
    if when < now:
        raise InvalidRequest(
            "effective_from lies in the past: a change applies from now on, never to usage "
            "already folded",
            param="effective_from",
        )
    return when


def describe(versions: Sequence[tuple[dt.datetime, Sequence[str]]], now: dt.datetime) -> str:
    """`model,region` (the keys in effect now, `-` for none), then each scheduled change as
    ` (from <time>: keys)`; `versions` in time order."""
    current = "-"
    later: list[str] = []
    for start, keys in versions:
        text = ",".join(keys) or "-"
        if start <= now:
            current = text
        else:
            later.append(f" (from {start.isoformat()}: {text})")
    return current + "".join(later)


@dataclass(frozen=True, slots=True)
class PriceMapping:
    """Usage of `meter`'s combinations whose values equal `filter` goes to `event_name`."""

    filter: tuple[tuple[str, str], ...]  # sorted (key, value) pairs
    event_name: str


def parse_filter(text: str) -> tuple[tuple[str, str], ...]:
    """`model=large,region=eu` → sorted pairs; InvalidRequest says what is wrong."""
    pairs: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.strip().partition("=")
        if not eq or not value:
            raise InvalidRequest("a filter is key=value[,key=value]", param="filter")
        (checked,) = parse_keys([key])
        if checked in pairs:
            raise InvalidRequest(f"filter key {checked!r} repeats", param="filter")
        pairs[checked] = value
    if len(pairs) > MAX_KEYS:
        raise InvalidRequest(f"at most {MAX_KEYS} filter keys", param="filter")
    return tuple(sorted(pairs.items()))


def route(dims: str, meter: str, mappings: Sequence[PriceMapping]) -> str:
    """The Stripe event name a bucket of combination `dims` of `meter` is reported to: the
    mapping whose filter its values equal, else the meter's own. `_other` and buckets without
    dimensions always go to the meter's own."""
    if not mappings or dims in (NO_DIMENSIONS, OTHER):
        return meter
    keys = [k for k, _ in mappings[0].filter]
    values = values_of(dims, keys)
    for m in mappings:
        if all(values[k] == v for k, v in m.filter):
            return m.event_name
    return meter
