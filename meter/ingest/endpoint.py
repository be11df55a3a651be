"""`POST /v1/events`: validate, deduplicate and buffer usage events in Redis.

Order of a request, and why a crash at any point is safe:
  1. authenticate, read and parse the body — nothing written yet; a crash loses nothing the
     client was told about (it gets no response and retries).
  2. validate every item — pure; rejected items are never written. Then the pairs of customer
     and meter over a hard limit (meter/limits.py: an in-process copy, no read but a tenant's
     first), rejected `over_limit`; the customers and meters billing does not know: rejected
     under METER_STRICT, else a warning on the item (a cached, best-effort read that never
     fails nor holds the request).
  3. check backpressure — a 503 here has written nothing.
  4. group commit to Redis (dedupe + append, atomic per event) — see committer.py.
  5. respond — only after Redis acknowledged. A crash between 4 and 5 leaves events written but
     unacknowledged: the client's retry gets `duplicate` for them (after METER_DEDUPE_WINDOW
     possibly `accepted`, and the aggregator's Postgres dedupe drops it), counted once.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Sequence
from typing import Any, cast
from zlib import crc32

import orjson
from aiohttp import web

from meter import appkeys
from meter.auth import authenticate_key
from meter.bodies import read_body
from meter.errors import (
    InvalidRequest,
    MeteringError,
    RateLimited,
    Unavailable,
)
from meter.events import UsageEvent
from meter.ingest.committer import Item, new_item
from meter.ingest.strict import KnownNames
from meter.ingest.validation import Rejection, plain_events, validate
from meter.limits import REASON as OVER_LIMIT
from meter.limits import SEPARATOR, Block
from meter.limits import refusal as limits_refusal
from meter.ratelimit import RateLimiter
from meter.redis_keys import may_repeat_forgotten, recent_horizon_ms, tenant_crc


def check_rate(limiter: RateLimiter | None, key_digest: bytes) -> None:
    """RateLimited (429 + Retry-After) when the key is over its rate; nothing is read yet."""
    if limiter is None:
        return
    wait = limiter.acquire(key_digest, time.monotonic())
    if wait:
        raise RateLimited(
            "this API key is over its request rate limit; retry later",
            retry_after=max(1, math.ceil(wait)),
        )


def parse_body(body: bytes, max_events: int) -> list[Any]:
    """The body as a list of raw items; InvalidRequest naming the problem and where it is."""
    if not body.strip():
        raise InvalidRequest("the body is empty; send an event object or an array of events")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(byte offset {exc.pos})"
        ) from None
    if isinstance(doc, dict):
        return [doc]
    if isinstance(doc, list):
        if len(doc) > max_events:
            raise InvalidRequest(f"the batch has {len(doc)} events; the maximum is {max_events}")
        return doc
    raise InvalidRequest("the body must be an event object or an array of event objects")


def _rejected(rejection: Rejection) -> dict[str, Any]:
    return {
        "id": rejection.id,
        "status": "rejected",
        "reason": rejection.reason,
        "message": rejection.message,
    }


async def _reject_unknown(
    known: KnownNames,
    tenant: str,
    items: list[Item],
    events: list[UsageEvent],
    slots: list[int],
    results: list[dict[str, Any]],
    reasons: dict[str, int],
) -> tuple[list[Item], list[int]]:
    """Strict mode: turn events for unknown customers/meters into rejections before commit."""
    bad_customers, bad_meters = await known.unknown(
        tenant, {e.customer for e in events}, {e.meter for e in events}
    )
    if not bad_customers and not bad_meters:
        return items, slots
    kept: list[Item] = []
    kept_slots: list[int] = []
    for item, slot, event in zip(items, slots, events, strict=True):
        if event.customer in bad_customers:
            rejection = Rejection("unknown_customer", "no such customer in billing", event.id)
        elif event.meter in bad_meters:
            rejection = Rejection("unknown_meter", "no such meter in billing", event.id)
        else:
            kept.append(item)
            kept_slots.append(slot)
            continue
        reasons[rejection.reason] = reasons.get(rejection.reason, 0) + 1
        results[slot] = _rejected(rejection)
    return kept, kept_slots


_CUSTOMER = operator.attrgetter("customer")


def _refuse_blocked(
    blocked: dict[str, Block],
    now_ms: int,
    items: list[Item],
    events: list[UsageEvent],
    slots: list[int],
    results: list[dict[str, Any]],
    reasons: dict[str, int],
) -> tuple[list[Item], list[UsageEvent], list[int]]:
    """Turn the events of blocked (customer, meter) pairs into `over_limit` rejections: those
    before the block's end (an event of the next period is its usage, not this one's)."""
    refused: dict[int, Block] = {}
    for n, event in enumerate(events):
        entry = blocked.get(event.customer + SEPARATOR + event.meter)
        if entry is not None and now_ms < entry.until_ms and event.timestamp_ms < entry.until_ms:
            refused[n] = entry
    if not refused:  # the common case: the lists stay as they are
        return items, events, slots
    for n, entry in refused.items():
        event = events[n]
        message = limits_refusal(entry, event.customer, event.meter)
        results[slots[n]] = _rejected(Rejection(OVER_LIMIT, message, event.id))
    reasons[OVER_LIMIT] = reasons.get(OVER_LIMIT, 0) + len(refused)
    kept = [n for n in range(len(events)) if n not in refused]
    return [items[n] for n in kept], [events[n] for n in kept], [slots[n] for n in kept]


_WARNING_MESSAGES = {
    "unknown_customer": "no such customer in billing (yet): the event is kept, and bills only "
    "once the customer exists (METER_STRICT=1 rejects such events)",
    "unknown_meter": "no such meter in billing (yet): the event is kept, and bills only once "
    "the meter exists (METER_STRICT=1 rejects such events)",
}


async def _warn_unknown(
    known: KnownNames,
    tenant: str,
    events: list[UsageEvent],
    slots: list[int],
    results: list[dict[str, Any]],
) -> None:
    """Outside strict mode: a `warning` on each item whose customer or meter billing does not
    know; the item stays accepted. Answered from the strict-mode cache (no query when warm)."""
    customers, meters = {e.customer for e in events}, {e.meter for e in events}
    answer = known.warnings_now(tenant, customers, meters)
    if answer is None:  # a name never read: its first read, bounded by the timeout
        answer = await known.warnings(tenant, customers, meters)
    bad_customers, bad_meters = answer
    if not bad_customers and not bad_meters:
        return
    for slot, event in zip(slots, events, strict=True):
        if event.customer in bad_customers:
            warning = "unknown_customer"
        elif event.meter in bad_meters:
            warning = "unknown_meter"
        else:
            continue
        results[slot]["warning"] = warning
        results[slot]["message"] = _WARNING_MESSAGES[warning]


async def _post_events(request: web.Request) -> web.Response:
    app = request.app
    metrics = app[appkeys.METRICS]
    started = time.perf_counter()
    tenant, key_digest = await authenticate_key(request)
    check_rate(app[appkeys.RATE_LIMITER], key_digest)
    settings = app[appkeys.SETTINGS]
    body = await read_body(request)
    now_ms = int(time.time() * 1000)
    checked_items: Sequence[UsageEvent | Rejection] | None = plain_events(
        body, tenant=tenant, now_ms=now_ms, max_events=settings.max_batch_events
    )
    if checked_items is None:
        limits = app[appkeys.LIMITS]
        checked_items = [
            validate(raw, tenant=tenant, now_ms=now_ms, limits=limits)
            for raw in parse_body(body, settings.max_batch_events)
        ]
    keys = app[appkeys.KEYS]
    shards = settings.shards
    horizon_ms = recent_horizon_ms(settings.dedupe_window_s, settings.future_tolerance_s)
    # Per request, not per event: the id is crc32'd from the tenant's running value, and
    # every dedupe key of a shard starts with the same prefix.
    seed = tenant_crc(tenant)
    prefixes = keys.dedupe_prefixes(tenant, shards)
    results: list[dict[str, Any]] = []
    to_commit: list[Item] = []
    events: list[UsageEvent] = []  # the event of each item in to_commit
    slots: list[int] = []  # index in results of each item in to_commit
    reasons: dict[str, int] = {}
    for checked in checked_items:
        if type(checked) is UsageEvent:
            event_id = checked.id
            shard = crc32(event_id.encode(), seed) % shards
            # Redis answers retries for METER_DEDUPE_WINDOW; later ones count once in Postgres,
            # and the flag tells the usage API which entries may be such retries.
            may_repeat = 1 if may_repeat_forgotten(checked.timestamp_ms, now_ms, horizon_ms) else 0
            to_commit.append(
                new_item((shard, prefixes[shard] + event_id, may_repeat, checked.encode()))
            )
            events.append(checked)
            slots.append(len(results))
            results.append({"id": event_id, "status": "accepted"})
        else:
            rejection = cast(Rejection, checked)
            reasons[rejection.reason] = reasons.get(rejection.reason, 0) + 1
            results.append(_rejected(rejection))

    hard_limits = app[appkeys.HARD_LIMITS]
    blocked = hard_limits.get(tenant)
    if blocked is None:
        blocked = await hard_limits.load(tenant)
    # Per event only when a customer of the batch has a block (a set check in C otherwise).
    if to_commit and blocked.customers and not blocked.customers.isdisjoint(map(_CUSTOMER, events)):
        to_commit, events, slots = _refuse_blocked(
            blocked.fields, now_ms, to_commit, events, slots, results, reasons
        )

    known = app[appkeys.KNOWN_NAMES]
    if to_commit and settings.strict:
        to_commit, slots = await _reject_unknown(
            known, tenant, to_commit, events, slots, results, reasons
        )
    elif to_commit:
        await _warn_unknown(known, tenant, events, slots, results)

    committer = app[appkeys.COMMITTER]
    if to_commit and committer.over_high_water({item.shard for item in to_commit}):
        raise Unavailable(
            "the event buffer is over its high-water mark; retry later", retry_after=5
        )
    statuses = await committer.commit(to_commit)

    duplicates = 0
    warned: dict[str, int] = {}
    for slot, accepted in zip(slots, statuses, strict=True):
        if not accepted:
            results[slot]["status"] = "duplicate"
            duplicates += 1
        elif "warning" in results[slot]:
            warning = results[slot]["warning"]
            warned[warning] = warned.get(warning, 0) + 1
    accepted_n = len(to_commit) - duplicates
    rejected_n = len(results) - len(to_commit)

    metrics.events_accepted.inc(accepted_n)
    if duplicates:
        metrics.events.labels("duplicate", "").inc(duplicates)
    for reason, n in reasons.items():
        metrics.events.labels("rejected", reason).inc(n)
    for warning, n in warned.items():
        metrics.warned[warning].inc(n)
    metrics.request_events.observe(len(results))
    metrics.request_seconds.observe(time.perf_counter() - started)
    body = orjson.dumps(
        {
            "results": results,
            "accepted": accepted_n,
            "duplicates": duplicates,
            "rejected": rejected_n,
        }
    )
    return web.Response(body=body, content_type="application/json")


async def post_events(request: web.Request) -> web.Response:
    """`POST /v1/events`, counted by HTTP status in meter_ingest_requests_total."""
    metrics = request.app[appkeys.METRICS]
    requests = metrics.requests
    try:
        response = await _post_events(request)
    except (MeteringError, web.HTTPException) as exc:
        requests.labels(str(exc.status)).inc()
        raise
    except Exception:
        requests.labels("500").inc()
        raise
    metrics.requests_ok.inc()
    return response
