"""Event destinations (`/v2/core/event_destinations`) and thin events (`/v2/core/events/{id}`).

A thin event is stored in full, retrievable at `/v2/core/events/{id}`; its *notification* — the
event without `data` — is what an enabled destination with `event_payload: thin` subscribed to
its type receives, signed with the destination's own secret like any webhook
(`Stripe-Signature`, which `StripeClient.parse_event_notification` verifies). A destination with
`event_payload: snapshot` receives v1 events, as a webhook endpoint does. Pages:
https://docs.stripe.com/api/v2/event-destinations/create,
https://docs.stripe.com/api/v2/core/events/event-types, https://docs.stripe.com/event-destinations.

Meter events Stripe rejects asynchronously become thin events here: one
`v1.billing.meter.error_report_triggered` (related object: the meter) per rejected event, or
`v1.billing.meter.no_meter_found` when no meter has the event name.
"""

from __future__ import annotations

import secrets
from typing import Any

from meter.stripe_emulator.core import Emulator, Req, Route
from meter.stripe_emulator.wire import Obj, invalid, merge_metadata, missing, new_id, rfc3339

BASE = "/v2/core/event_destinations"
TYPES = ("webhook_endpoint", "amazon_eventbridge", "azure_event_grid")
PAYLOADS = ("snapshot", "thin")
SIGNING_SECRET = "webhook_endpoint.signing_secret"
URL = "webhook_endpoint.url"
ERROR_REPORT = "v1.billing.meter.error_report_triggered"
NO_METER = "v1.billing.meter.no_meter_found"


def routes() -> list[Route]:
    return [
        Route("POST", BASE, create),
        Route("GET", BASE, list_),
        Route("GET", BASE + "/{id}", retrieve),
        Route("POST", BASE + "/{id}", update),
        Route("DELETE", BASE + "/{id}", delete),
        Route("POST", BASE + "/{id}/disable", disable),
        Route("POST", BASE + "/{id}/enable", enable),
        Route("GET", "/v2/core/events/{id}", retrieve_event),
    ]


def _thin_types() -> frozenset[str]:
    """The thin event types: those the pinned SDK has an event class for."""
    from stripe.events import _event_classes

    return frozenset(_event_classes._V2_EVENT_CLASS_LOOKUP)


THIN_TYPES = _thin_types()


def _strings(raw: Any, param: str) -> list[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) and x for x in raw):
        raise missing(param)
    return list(raw)


def _enabled_events(raw: Any, payload: str) -> list[str]:
    from meter.stripe_emulator.webhooks import EVENT_TYPES

    events = _strings(raw, "enabled_events")
    known = THIN_TYPES if payload == "thin" else EVENT_TYPES
    for i, event in enumerate(events):
        if event not in known:
            raise invalid(
                f"Invalid enabled_events[{i}]: {event} is not a {payload} event type.",
                f"enabled_events[{i}]",
            )
    return events


def _includes(req: Req) -> set[str]:
    raw = req.get("include")
    return {str(x) for x in raw} if isinstance(raw, list) else set()


def _view(destination: Obj, include: set[str]) -> Obj:
    """The wire shape: the signing secret and the URL are redacted unless included (the secret
    only in the create answer: "public API clients cannot retrieve it later")."""
    out = {k: v for k, v in destination.items() if not k.startswith("_")}
    if destination["type"] == "webhook_endpoint":
        out["webhook_endpoint"] = {
            "signing_secret": destination["_secret"] if SIGNING_SECRET in include else None,
            "url": destination["_url"] if URL in include else None,
        }
    return out


def create(req: Req) -> Obj:
    name = req.get("name")
    if not isinstance(name, str) or not name:
        raise missing("name")
    type_ = req.get("type")
    if type_ not in TYPES:
        raise missing("type") if type_ is None else invalid(f"Invalid type: {type_}.", "type")
    if type_ != "webhook_endpoint":
        raise invalid(f"The emulator delivers to webhook endpoints only, not {type_}.", "type")
    payload = req.get("event_payload")
    if payload not in PAYLOADS:
        raise (
            missing("event_payload")
            if payload is None
            else invalid(f"Invalid event_payload: {payload}.", "event_payload")
        )
    events = _enabled_events(req.get("enabled_events"), str(payload))
    endpoint = req.get("webhook_endpoint")
    url = endpoint.get("url") if isinstance(endpoint, dict) else None
    if not isinstance(url, str) or not url:
        raise missing("webhook_endpoint.url")
    if payload == "thin" and req.get("snapshot_api_version"):
        raise invalid("snapshot_api_version is for snapshot events only.", "snapshot_api_version")
    now = rfc3339(req.state.now())
    destination: Obj = {
        "id": new_id("ed"),
        "object": "v2.core.event_destination",
        "amazon_eventbridge": None,
        "azure_event_grid": None,
        "created": now,
        "description": req.get("description") or "",
        "enabled_events": events,
        "event_payload": payload,
        "events_from": req.get("events_from") or ["self"],
        "livemode": False,
        "metadata": merge_metadata({}, req.get("metadata") or {}),
        "name": name,
        "snapshot_api_version": (
            (req.get("snapshot_api_version") or req.emu.config.api_version)
            if payload == "snapshot"
            else None
        ),
        "status": "enabled",
        "status_details": None,
        "type": type_,
        "updated": now,
        "_url": url,
        "_secret": "whsec_" + secrets.token_hex(16),
    }
    req.state.put(destination)
    return _view(destination, _includes(req))


def _get(req: Req) -> Obj:
    return req.state.get("v2.core.event_destination", req.match["id"])


def retrieve(req: Req) -> Obj:
    return _view(_get(req), _includes(req) - {SIGNING_SECRET})


def list_(req: Req) -> Obj:
    include = _includes(req) - {SIGNING_SECRET}
    found = [_view(d, include) for d in req.state.all("v2.core.event_destination")]
    return {"data": found, "next_page_url": None, "previous_page_url": None}


def update(req: Req) -> Obj:
    destination = _get(req)
    if "enabled_events" in req.params:
        destination["enabled_events"] = _enabled_events(
            req.get("enabled_events"), destination["event_payload"]
        )
    for name in ("name", "description"):
        if isinstance(req.get(name), str):
            destination[name] = req.get(name)
    if "metadata" in req.params:
        destination["metadata"] = merge_metadata(destination["metadata"], req.get("metadata"))
    endpoint = req.get("webhook_endpoint")
    if isinstance(endpoint, dict) and endpoint.get("url"):
        destination["_url"] = str(endpoint["url"])
    destination["updated"] = rfc3339(req.state.now())
    return _view(destination, _includes(req) - {SIGNING_SECRET})


def _set_status(req: Req, status: str) -> Obj:
    destination = _get(req)
    destination["status"] = status
    destination["status_details"] = (
        {"disabled": {"reason": "user"}} if status == "disabled" else None
    )
    destination["updated"] = rfc3339(req.state.now())
    return _view(destination, set())


def disable(req: Req) -> Obj:
    return _set_status(req, "disabled")


def enable(req: Req) -> Obj:
    return _set_status(req, "enabled")


def delete(req: Req) -> Obj:
    destination = _get(req)
    req.state.delete(destination["id"])
    return {"id": destination["id"], "object": "v2.core.event_destination", "deleted": True}


def retrieve_event(req: Req) -> Obj:
    event = req.state.get("v2.core.event", req.match["id"])
    return dict(event)


def notification(event: Obj) -> Obj:
    """What a thin destination receives: the event without its `data` (fetched by id)."""
    return {k: v for k, v in event.items() if k not in ("data", "changes")}


def emit_thin(emu: Emulator, type_: str, related: Obj | None, data: Obj) -> Obj:
    """Record a thin event and queue its notification for the thin destinations."""
    event: Obj = {
        "id": new_id("evt"),
        "object": "v2.core.event",
        "context": None,
        "created": rfc3339(emu.state.now()),
        "data": data,
        "livemode": False,
        "reason": None,
        "type": type_,
    }
    if related is not None:
        event["related_object"] = related
    emu.state.put(event)
    note = notification(event)
    if emu.outbox is not None:
        emu.outbox.put_nowait(note)
    else:
        emu.pending_events.append(note)
    return event


def report_rejection(emu: Emulator, rejected: Obj, meter: Obj | None) -> Obj:
    """The thin event for one meter event Stripe accepted and then rejected: its fields are the
    SDK's `V1BillingMeterErrorReportTriggeredEvent` data (`reason.error_count`,
    `error_types[].code|error_count|sample_errors`, `developer_message_summary`, the
    validation window)."""
    now = rfc3339(emu.state.now())
    data: Obj = {
        "developer_message_summary": f"1 meter event was rejected: {rejected['message']}",
        "reason": {
            "error_count": 1,
            "error_types": [
                {
                    "code": rejected["code"],
                    "error_count": 1,
                    "sample_errors": [
                        {
                            "error_message": rejected["message"],
                            "request": {"identifier": str(rejected.get("identifier") or "")},
                        }
                    ],
                }
            ],
        },
        "validation_start": now,
        "validation_end": now,
    }
    if meter is None:
        return emit_thin(emu, NO_METER, None, data)
    related = {
        "id": meter["id"],
        "type": "billing.meter",
        "url": f"/v1/billing/meters/{meter['id']}",
    }
    return emit_thin(emu, ERROR_REPORT, related, data)
