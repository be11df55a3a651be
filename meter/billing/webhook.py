"""`POST /stripe/webhook`: verify, record and apply one Stripe event, exactly once.

The order of the steps is what makes a delivery safe to repeat or to fail at any point:
1. read the raw body, before anything parses it: the signature covers the exact bytes;
2. verify the signature with the SDK (300 s tolerance) against each configured secret; a bad
   one → 400 and nothing else; a thin notification (`v2.core.event`, from an event
   destination) is then fetched in full from Stripe by its id (`/v2/core/events/{id}`): a
   failed fetch answers non-2xx with nothing recorded, so Stripe's redelivery fetches again;
3. in one transaction: insert the event id into stripe_events (a duplicate finds it and
   answers 200 with no effect), then apply the handler's writes; a crash or a database error
   rolls back both, we answer 500, and Stripe's redelivery starts from scratch;
4. after commit: metrics and re-attribution, which are repeatable and repaired by the sweep.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from aiohttp import web

from meter import appkeys, jsonwire
from meter.billing import queries
from meter.billing.errors import InvalidSignature, StoreUnavailable
from meter.billing.gateway import Obj
from meter.billing.service import Billing
from meter.billing.store import Effects
from meter.billing.stripe_events import HANDLERS, METER_ERROR_EVENTS, Context, meter_error_count
from meter.bodies import read_body
from meter.connections import PG_ERRORS
from meter.errors import InvalidRequest, MeteringError, PayloadTooLarge

log = logging.getLogger(__name__)


def event_created(event: Obj) -> int:
    """Unix seconds; v2 (thin) events carry an RFC 3339 string instead."""
    created = event.get("created")
    if isinstance(created, int | float):
        return int(created)
    if isinstance(created, str):
        return int(dt.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    raise InvalidRequest("the event has no `created` time", param="created")


async def process(billing: Billing, event: Obj) -> str:
    """Apply a verified event; returns the outcome (applied, duplicate, stale, ignored)."""
    id_, type_ = str(event.get("id") or ""), str(event.get("type") or "")
    if not id_ or not type_:
        raise InvalidRequest("the event has no id or type")
    created = event_created(event)
    handler = HANDLERS.get(type_)
    ctx = Context(
        refetch=billing.refetch,
        default_tenant=billing.settings.billing_default_tenant,
        upkeep=billing.upkeep,
    )
    effects = Effects()
    try:
        async with billing.connection() as conn:
            # Fast path for redeliveries: no transaction, no refetch from Stripe.
            if await conn.fetchval(queries.EVENT_SEEN, id_) is not None:
                return "duplicate"
            async with conn.transaction():
                outcome = "applied" if handler is not None else "ignored"
                if await conn.fetchval(queries.RECORD_EVENT, id_, type_, created, outcome) is None:
                    return "duplicate"  # a concurrent delivery of the same event won
                if handler is not None:
                    effects = await handler(ctx, conn, event)
                    if effects.stale:
                        outcome = "stale"
                        await conn.execute(queries.SET_EVENT_OUTCOME, id_, outcome)
            await billing.after_commit(conn, effects)
    except PG_ERRORS as exc:
        log.error(
            "webhook not applied: database error",
            extra={"event": id_, "type": type_, "error": type(exc).__name__},
        )
        raise StoreUnavailable("database unavailable; nothing was applied") from None
    if type_ in METER_ERROR_EVENTS and outcome == "applied":
        code, count = meter_error_count(event)
        billing.metrics.meter_errors.labels(code).inc(count)
    return outcome


async def _seen(billing: Billing, event: Obj) -> bool:
    """Whether the event was applied already: a redelivered thin notification is answered
    without reading its event from Stripe again (`process` answers it `duplicate`)."""
    try:
        async with billing.connection() as conn:
            return await conn.fetchval(queries.EVENT_SEEN, str(event.get("id") or "")) is not None
    except PG_ERRORS:
        raise StoreUnavailable("database unavailable; nothing was applied") from None


async def stripe_webhook(request: web.Request) -> web.Response:
    billing = request.app[appkeys.BILLING]
    started = time.perf_counter()
    # 1.
    payload = await read_body(request)
    if len(payload) > billing.settings.max_body_bytes:
        raise PayloadTooLarge("webhook body too large")
    type_ = "unknown"
    try:
        # 2.
        try:
            event = billing.gateway.verify_event(payload, request.headers.get("Stripe-Signature"))
        except InvalidSignature as exc:
            log.warning("webhook refused", extra={"reason": exc.message, "bytes": len(payload)})
            billing.metrics.webhook_events.labels("unknown", "bad_signature").inc()
            raise
        type_ = str(event.get("type") or "unknown")
        if event.get("object") == "v2.core.event" and not await _seen(billing, event):
            try:
                event = await billing.gateway.fetch_event(str(event.get("id") or ""))
            except MeteringError:
                billing.metrics.webhook_events.labels(type_, "error").inc()
                raise
        # 3. and 4.
        try:
            outcome = await process(billing, event)
        except MeteringError:
            billing.metrics.webhook_events.labels(type_, "error").inc()
            raise
        billing.metrics.webhook_events.labels(type_, outcome).inc()
        if outcome != "applied":
            log.info("webhook event not applied", extra={"event": event["id"], "outcome": outcome})
        return jsonwire.response({"received": True, "outcome": outcome})
    finally:
        billing.metrics.webhook_seconds.observe(time.perf_counter() - started)
