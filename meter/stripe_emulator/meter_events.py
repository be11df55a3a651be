"""Meter events in: v1 `meter_events`/`meter_event_adjustments`, v2 session, stream and events.

What Stripe checks synchronously (shape, text limits, timestamp window, duplicate identifier on
the synchronous endpoints) answers 400. What Stripe checks asynchronously (unknown or inactive
meter, unknown customer, missing value) is accepted and then kept in `rejected_meter_events`
and reported as a thin event (event_destinations.py), as Stripe's meter error reports. The v2
stream drops duplicates silently, like Stripe.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

from meter.stripe_emulator import event_destinations, meter_math, meters
from meter.stripe_emulator.core import Emulator, Req, Route
from meter.stripe_emulator.state import MeterEventRecord
from meter.stripe_emulator.wire import (
    Obj,
    StripeError,
    int_param,
    invalid,
    missing,
    new_id,
    parse_rfc3339,
    rfc3339,
    str_param,
)

ADJUSTMENT_WINDOW_SECONDS = 24 * 3600
MAX_STREAM_EVENTS = 100


def routes() -> list[Route]:
    return [
        Route("POST", "/v1/billing/meter_events", create_v1),
        Route("POST", "/v1/billing/meter_event_adjustments", adjust_v1),
        Route("POST", "/v2/billing/meter_event_session", create_session),
        Route("POST", "/v2/billing/meter_events", create_v2),
        Route("POST", "/v2/billing/meter_event_adjustments", adjust_v2),
    ]


def stream_routes() -> list[Route]:
    return [Route("POST", "/v2/billing/meter_event_stream", stream)]


def _rule_error(exc: meter_math.MeterRuleError, prefix: str = "") -> StripeError:
    return StripeError(400, str(exc), code=exc.code, param=prefix + exc.param)


def _accept(
    emu: Emulator, event_name: str, payload: dict[str, Any], identifier: str, timestamp: int
) -> None:
    """File an already-validated, non-duplicate event under its meter (or as rejected)."""
    state = emu.state
    state.identifiers[identifier] = int(time.time())
    meter = meters.active_meter_for(state, event_name)

    def reject(code: str, message: str, to: Obj | None = None) -> None:
        rejected = {
            "identifier": identifier,
            "event_name": event_name,
            "code": code,
            "message": message,
        }
        state.rejected_meter_events.append(rejected)
        event_destinations.report_rejection(emu, rejected, to if to is not None else meter)

    if meter is None:
        # The error report's codes (stripe-python, V1BillingMeterErrorReportTriggeredEvent
        # `error_types[].code`): `archived_meter` for a deactivated meter, which "no more meter
        # events will be accepted for" (https://docs.stripe.com/api/billing/meter/deactivate),
        # `no_meter` for an event name no meter has.
        known = [m for m in state.all("billing.meter") if m["event_name"] == event_name]
        if known:
            reject(
                "archived_meter",
                f"The meter for event_name {event_name} is deactivated.",
                known[-1],
            )
        else:
            reject("no_meter", f"No meter found for event_name {event_name}.")
        return
    customer_key = meter["customer_mapping"]["event_payload_key"]
    customer = payload.get(customer_key)
    if not customer:
        reject("meter_event_no_customer_defined", f"Customer mapping key {customer_key} not found.")
        return
    if state.find(str(customer)) is None:
        reject("meter_event_customer_not_found", f"Customer {customer} not found.")
        return
    value_key = meter["value_settings"]["event_payload_key"]
    formula = meter["default_aggregation"]["formula"]
    raw = payload.get(value_key)
    if raw is None and formula != "count":
        reject("meter_event_value_not_found", f"Value key {value_key} not found in payload.")
        return
    try:
        value = meter_math.parse_value(1 if raw is None else raw)
    except meter_math.MeterRuleError as exc:
        reject("meter_event_invalid_value", str(exc))
        return
    state.meter_events.append(
        MeterEventRecord(
            event_name=event_name,
            meter=meter["id"],
            customer=str(customer),
            value=str(value),
            timestamp=timestamp,
            identifier=identifier,
            created=state.now_for_customer(str(customer)),
            received=state.now(),
        )
    )


def _validate(
    emu: Emulator, event_name: Any, payload: Any, identifier: Any, timestamp: int | None, pre: str
) -> tuple[str, dict[str, Any], str, int]:
    if not isinstance(event_name, str) or not event_name:
        raise missing(pre + "event_name")
    if not isinstance(payload, dict) or not payload:
        raise missing(pre + "payload")
    ident = str(identifier) if identifier else str(uuid.uuid4())
    try:
        meter_math.check_text(event_name, "event_name")
        meter_math.check_text(ident, "identifier")
    except meter_math.MeterRuleError as exc:
        raise _rule_error(exc, pre) from None
    payload = {str(k): str(v) for k, v in payload.items()}
    meter = meters.active_meter_for(emu.state, event_name)
    customer_key = meter["customer_mapping"]["event_payload_key"] if meter else "stripe_customer_id"
    now = emu.state.now_for_customer(payload.get(customer_key))
    ts = now if timestamp is None else timestamp
    try:
        meter_math.check_timestamp(ts, now, "timestamp")
        value_key = meter["value_settings"]["event_payload_key"] if meter else "value"
        if value_key in payload:
            meter_math.parse_value(payload[value_key], f"payload[{value_key}]")
    except meter_math.MeterRuleError as exc:
        raise _rule_error(exc, pre) from None
    return event_name, payload, ident, ts


def _duplicate(identifier: str) -> StripeError:
    return StripeError(
        400,
        f"An event already exists with identifier {identifier}.",
        param="identifier",
        headers={"Stripe-Should-Retry": "false"},
    )


def create_v1(req: Req) -> Obj:
    ts = int_param(req.params, "timestamp") if req.get("timestamp") not in (None, "") else None
    name, payload, ident, ts = _validate(
        req.emu, req.get("event_name"), req.get("payload"), req.get("identifier"), ts, ""
    )
    if ident in req.state.identifiers:
        raise _duplicate(ident)
    _accept(req.emu, name, payload, ident, ts)
    return {
        "object": "billing.meter_event",
        "created": req.state.now(),
        "event_name": name,
        "identifier": ident,
        "livemode": False,
        "payload": payload,
        "timestamp": ts,
    }


def create_v2(req: Req) -> Obj:
    raw_ts = req.get("timestamp")
    ts = None if raw_ts is None else int(parse_rfc3339(str(raw_ts), "timestamp"))
    name, payload, ident, ts = _validate(
        req.emu, req.get("event_name"), req.get("payload"), req.get("identifier"), ts, ""
    )
    if ident in req.state.identifiers:
        raise _duplicate(ident)
    _accept(req.emu, name, payload, ident, ts)
    return {
        "object": "v2.billing.meter_event",
        "created": rfc3339(time.time()),
        "event_name": name,
        "identifier": ident,
        "livemode": False,
        "payload": payload,
        "timestamp": rfc3339(ts),
    }


def _cancel(req: Req, identifier: str, event_name: str, param: str) -> None:
    for event in req.state.meter_events:
        if event.identifier == identifier and event.event_name == event_name:
            # "You can only cancel events within 24 hours of Stripe receiving them" (API
            # reference, meter event adjustment `cancel.identifier`): receipt, not event time.
            if req.state.now() - event.received > ADJUSTMENT_WINDOW_SECONDS:
                raise invalid(
                    "Meter events can only be cancelled within 24 hours of being sent.", param
                )
            event.canceled = True
            return
    raise invalid(f"No meter event found with identifier {identifier}.", param, "resource_missing")


def adjust_v1(req: Req) -> Obj:
    event_name = str_param(req.params, "event_name")
    if req.get("type", "cancel") != "cancel":
        raise invalid("type must be cancel", "type")
    cancel = req.get("cancel") or {}
    identifier = cancel.get("identifier") if isinstance(cancel, dict) else None
    if not identifier:
        raise missing("cancel[identifier]")
    _cancel(req, str(identifier), event_name, "cancel[identifier]")
    return {
        "object": "billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "event_name": event_name,
        "livemode": False,
        "status": "pending",
        "type": "cancel",
    }


def adjust_v2(req: Req) -> Obj:
    event_name = str_param(req.params, "event_name")
    cancel = req.get("cancel") or {}
    identifier = cancel.get("identifier") if isinstance(cancel, dict) else None
    if not identifier:
        raise missing("cancel.identifier")
    _cancel(req, str(identifier), event_name, "cancel.identifier")
    return {
        "id": new_id("mea"),
        "object": "v2.billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "created": rfc3339(time.time()),
        "event_name": event_name,
        "livemode": False,
        "status": "pending",
        "type": "cancel",
    }


def create_session(req: Req) -> Obj:
    # Session expiry follows real time: it is the client's clock that must renew it.
    created = time.time()
    expires = created + req.emu.config.session_ttl_seconds
    token = "ek_test_" + secrets.token_urlsafe(32)
    req.state.sessions[token] = expires
    return {
        "id": new_id("mes"),
        "object": "v2.billing.meter_event_session",
        "authentication_token": token,
        "created": rfc3339(created),
        "expires_at": rfc3339(expires),
        "livemode": False,
    }


def stream(req: Req) -> Obj:
    events = req.get("events")
    if not isinstance(events, list) or not events:
        raise missing("events")
    if len(events) > MAX_STREAM_EVENTS:
        raise invalid(f"events must contain at most {MAX_STREAM_EVENTS} items.", "events")
    accepted: list[tuple[str, dict[str, Any], str, int]] = []
    for i, event in enumerate(events):
        pre = f"events[{i}]."
        if not isinstance(event, dict):
            raise invalid("Each event must be an object.", f"events[{i}]")
        raw_ts = event.get("timestamp")
        ts = None if raw_ts is None else int(parse_rfc3339(str(raw_ts), pre + "timestamp"))
        try:
            accepted.append(
                _validate(
                    req.emu,
                    event.get("event_name"),
                    event.get("payload"),
                    event.get("identifier"),
                    ts,
                    pre,
                )
            )
        except StripeError as exc:
            if exc.code in ("parameter_missing", "string_length_exceeded"):
                raise
            # Timestamp and value rules are checked after the stream accepted the batch.
            rejected = {
                "identifier": event.get("identifier"),
                "event_name": event.get("event_name"),
                "code": exc.code,
                "message": exc.message,
            }
            req.state.rejected_meter_events.append(rejected)
            meter = meters.active_meter_for(req.state, str(event.get("event_name")))
            event_destinations.report_rejection(req.emu, rejected, meter)
    for name, payload, ident, ts in accepted:
        if ident not in req.state.identifiers:
            _accept(req.emu, name, payload, ident, ts)
    return {}
