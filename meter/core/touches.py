"""Touches: the (tenant, customer, meter)s whose usage the aggregator just folded, as it tells
the alert evaluator (docs/alerts.md). A hint for promptness, never the record: the evaluator's
periodic sweep finds whatever a lost touch would have said. Pure but for `publish`."""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from meter.redis_keys import Keys

Touch = tuple[str, str, str]  # tenant, customer (as the events name it), meter
FIELD = b"t"
# The stream's size is bounded on two axes, as it is kept in Redis memory and read whole by
# evaluators in batches of entries: a flush's touches go into entries of at most
# TOUCHES_PER_ENTRY (a 20,000-event flush of distinct customers makes 200 entries, not one of
# ~1 MB), and the stream keeps about MAX_LEN entries (approximate trimming, cheap), so at most
# ~1,000,000 touches (~60 MB) if no evaluator reads it. Older touches are dropped then: the sweep
# covers them. An evaluator reads TOUCH_BATCH entries at a time, so at most 10,000 touches.
TOUCHES_PER_ENTRY = 100
MAX_LEN = 10_000


def entries(touches: Iterable[Touch]) -> list[bytes]:
    """The payloads of the stream entries holding `touches`, each of at most TOUCHES_PER_ENTRY."""
    ordered = sorted(set(touches))
    return [
        orjson.dumps(ordered[i : i + TOUCHES_PER_ENTRY])
        for i in range(0, len(ordered), TOUCHES_PER_ENTRY)
    ]


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
    """A flush's touches, in entries of bounded size (one round trip)."""
    payloads = entries(touches)
    if not payloads:
        return
    async with redis.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
        for payload in payloads:
            pipe.xadd(keys.alert_touches(), {FIELD: payload}, maxlen=MAX_LEN, approximate=True)
        await pipe.execute()
