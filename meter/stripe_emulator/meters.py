"""Billing meters: `/v1/billing/meters` and their `event_summaries`."""

from __future__ import annotations

import hashlib
from decimal import Decimal

from meter.stripe_emulator import meter_math
from meter.stripe_emulator.core import Req, Route
from meter.stripe_emulator.state import State
from meter.stripe_emulator.wire import (
    Obj,
    StripeError,
    int_param,
    invalid,
    new_id,
    paginate,
    str_param,
)

BASE = "/v1/billing/meters"


def routes() -> list[Route]:
    return [
        Route("POST", BASE, create),
        Route("GET", BASE, list_),
        Route("GET", BASE + "/{id}", retrieve),
        Route("POST", BASE + "/{id}", update),
        Route("POST", BASE + "/{id}/deactivate", deactivate),
        Route("POST", BASE + "/{id}/reactivate", reactivate),
        Route("GET", BASE + "/{id}/event_summaries", event_summaries),
    ]


def active_meter_for(state: State, event_name: str) -> Obj | None:
    for meter in state.all("billing.meter"):
        if meter["event_name"] == event_name and meter["status"] == "active":
            return meter
    return None


def create(req: Req) -> Obj:
    display_name = str_param(req.params, "display_name")
    event_name = str_param(req.params, "event_name")
    if len(event_name) > meter_math.MAX_TEXT:
        raise invalid("event_name must be at most 100 characters.", "event_name")
    aggregation = req.get("default_aggregation")
    if not isinstance(aggregation, dict) or "formula" not in aggregation:
        raise invalid(
            "Missing required param: default_aggregation[formula].",
            "default_aggregation[formula]",
            "parameter_missing",
        )
    formula = aggregation["formula"]
    if formula not in meter_math.FORMULAS:
        raise invalid(
            "Invalid default_aggregation[formula]: must be one of "
            + ", ".join(meter_math.FORMULAS),
            "default_aggregation[formula]",
        )
    if active_meter_for(req.state, event_name) is not None:
        raise invalid(
            f"An active meter with event_name '{event_name}' already exists.", "event_name"
        )
    mapping = req.get("customer_mapping") or {}
    value_settings = req.get("value_settings") or {}
    window = req.get("event_time_window")
    if window not in (None, "", "hour", "day"):
        raise invalid("event_time_window must be one of day, hour", "event_time_window")
    now = req.state.now()
    meter: Obj = {
        "id": new_id("mtr"),
        "object": "billing.meter",
        "created": now,
        "customer_mapping": {
            "event_payload_key": mapping.get("event_payload_key", "stripe_customer_id"),
            "type": mapping.get("type", "by_id"),
        },
        "default_aggregation": {"formula": formula},
        "display_name": display_name,
        "event_name": event_name,
        "event_time_window": window or None,
        "livemode": False,
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "updated": now,
        "value_settings": {"event_payload_key": value_settings.get("event_payload_key", "value")},
    }
    req.state.put(meter)
    req.emu.emit("billing.meter.created", meter)
    return meter


def retrieve(req: Req) -> Obj:
    return req.state.get("billing.meter", req.match["id"])


def list_(req: Req) -> Obj:
    meters = req.state.all("billing.meter")
    if status := req.get("status"):
        meters = [m for m in meters if m["status"] == status]
    return paginate(meters, req.params, BASE)


def update(req: Req) -> Obj:
    meter = req.state.get("billing.meter", req.match["id"])
    if name := req.get("display_name"):
        previous = {"display_name": meter["display_name"]}
        meter["display_name"] = str(name)
        meter["updated"] = req.state.now()
        req.emu.emit("billing.meter.updated", meter, previous)
    return meter


def _set_status(req: Req, status: str) -> Obj:
    meter = req.state.get("billing.meter", req.match["id"])
    if meter["status"] == status:
        verb = "deactivated" if status == "inactive" else "active"
        raise invalid(f"This meter is already {verb}.", None)
    if status == "active" and active_meter_for(req.state, meter["event_name"]):
        raise invalid("Another active meter uses this event_name.", "event_name")
    now = req.state.now()
    previous = {"status": meter["status"]}
    meter["status"] = status
    meter["status_transitions"] = {"deactivated_at": now if status == "inactive" else None}
    meter["updated"] = now
    req.emu.emit(
        "billing.meter.deactivated" if status == "inactive" else "billing.meter.reactivated",
        meter,
        previous,
    )
    return meter


def deactivate(req: Req) -> Obj:
    return _set_status(req, "inactive")


def reactivate(req: Req) -> Obj:
    return _set_status(req, "active")


def points(state: State, meter: Obj, customer: str) -> list[meter_math.Point]:
    """A customer's live (not cancelled) events of a meter, in arrival order; for a meter
    pre-aggregated by `event_time_window`, the last one received in each window."""
    live = [
        meter_math.Point(e.timestamp, Decimal(e.value), seq)
        for seq, e in enumerate(state.meter_events)
        if e.meter == meter["id"] and e.customer == customer and not e.canceled
    ]
    return meter_math.pre_aggregated(live, meter.get("event_time_window"))


def event_summaries(req: Req) -> Obj:
    meter = req.state.get("billing.meter", req.match["id"])
    customer = str_param(req.params, "customer")
    start = int_param(req.params, "start_time")
    end = int_param(req.params, "end_time")
    grouping = req.get("value_grouping_window") or None
    if grouping not in (None, "hour", "day"):
        raise invalid("value_grouping_window must be one of day, hour", "value_grouping_window")
    try:
        meter_math.check_range(start, end, grouping)
    except meter_math.MeterRuleError as exc:
        raise StripeError(400, str(exc), param=exc.param) from None
    formula = meter["default_aggregation"]["formula"]
    rows = meter_math.summarize(formula, points(req.state, meter, customer), start, end, grouping)
    summaries = [_summary(meter["id"], customer, lo, hi, value) for lo, hi, value in rows]
    url = f"{BASE}/{meter['id']}/event_summaries"
    return paginate(summaries, req.params, url, newest_first=True)


def _summary(meter_id: str, customer: str, start: int, end: int, value: Decimal) -> Obj:
    # Ids are derived from the window so pagination cursors stay valid between calls.
    digest = hashlib.sha256(f"{meter_id}:{customer}:{start}:{end}".encode()).hexdigest()[:32]
    return {
        "id": "mtrusg_" + digest,
        "object": "billing.meter_event_summary",
        "aggregated_value": meter_math.as_number(value),
        "end_time": end,
        "livemode": False,
        "meter": meter_id,
        "start_time": start,
    }
