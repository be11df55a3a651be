"""Touches: the (tenant, customer, meter)s whose usage the aggregator just folded, as it tells
the alert evaluator (docs/alerts.md). A hint for promptness, never the record: the evaluator's
periodic sweep finds whatever a lost touch would have said. Pure but for `publish`."""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from meter.redis_keys import Keys

Touch = tuple[str, str, str]  # tenant, customer (as the events name it), meter
FIELD = b"t"
# Bounds the stream if no evaluator runs: older touches are dropped (the sweep covers them).
MAX_LEN = 100_000


def encode(touches: Iterable[Touch]) -> bytes:
    return orjson.dumps(sorted(set(touches)))


def decode(raw: bytes) -> list[Touch]:
    """A stream entry's touches; a malformed entry is no touch at all (the sweep covers it)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(doc, list):
        return []
    return [
        (t[0], t[1], t[2])
        for t in doc
        if isinstance(t, list) and len(t) == 3 and all(isinstance(x, str) for x in t)
    ]


async def publish(redis: object, keys: Keys, touches: Iterable[Touch]) -> None:
    """One stream entry holding every touch of a flush."""
    payload = encode(touches)
    await redis.xadd(  # type: ignore[attr-defined]
        keys.alert_touches(), {FIELD: payload}, maxlen=MAX_LEN, approximate=True
    )
