"""The webhook endpoint routes (meter/webhooks/routes.py): endpoints, secret rotation, the
delivery log and redelivery."""

from __future__ import annotations

from meter.openapi.common import Doc, ok, operation, ref
from meter.paging import limit_parameter, starting_after_parameter
from meter.webhooks.endpoints import MAX_OVERLAP_S, MAX_URL_CHARS, WILDCARD
from meter.webhooks.events import EVENT_TYPES
from meter.webhooks.routes import DELIVERY_STATUSES

_TAG = "webhooks"
_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "the endpoint (`we_…`)",
    "schema": {"type": "string"},
}
_DELIVERY = {
    "name": "delivery",
    "in": "path",
    "required": True,
    "description": "the delivery (`whd_…`)",
    "schema": {"type": "string"},
}


_URL = {"type": "string", "maxLength": MAX_URL_CHARS, "description": "http:// or https://"}
_TYPES = {
    "type": "array",
    "minItems": 1,
    "items": {"enum": [*EVENT_TYPES, WILDCARD]},
    "description": "the event types sent to it (`*`: all, including types added later)",
}
_NULLABLE_INT = {"type": ["integer", "null"]}

SCHEMAS: Doc = {
    "WebhookEndpoint": {
        "type": "object",
        "required": [
            "object",
            "id",
            "url",
            "enabled_events",
            "status",
            "disabled_reason",
            "created",
        ],
        "additionalProperties": False,
        "properties": {
            "object": {"const": "webhook_endpoint"},
            "id": {"type": "string"},
            "url": {"type": "string"},
            "enabled_events": {"type": "array", "items": {"type": "string"}},
            "status": {"enum": ["enabled", "disabled"]},
            "disabled_reason": {"type": ["string", "null"]},
            "created": {"type": "integer"},
            "secret": {
                "type": "string",
                "description": "the signing secret; only in the answers to create and rotate",
            },
            "previous_secret_expires": {
                "type": "integer",
                "description": "rotate only: until when the previous secret signs too",
            },
        },
    },
    "WebhookDelivery": {
        "type": "object",
        "required": [
            "object",
            "id",
            "endpoint",
            "event",
            "status",
            "attempts",
            "next_attempt",
            "created",
            "delivered",
            "attempt_log",
        ],
        "additionalProperties": False,
        "properties": {
            "object": {"const": "webhook_delivery"},
            "id": {"type": "string"},
            "endpoint": {"type": "string"},
            "event": {
                "type": "object",
                "required": ["id", "type", "created"],
                "properties": {
                    "id": {"type": "string"},
                    "type": {"type": "string"},
                    "created": {"type": "integer"},
                },
            },
            "status": {"enum": list(DELIVERY_STATUSES)},
            "attempts": {"type": "integer", "minimum": 0},
            "next_attempt": _NULLABLE_INT,
            "created": {"type": "integer"},
            "delivered": _NULLABLE_INT,
            "attempt_log": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["attempt", "started", "finished", "status_code", "error"],
                    "properties": {
                        "attempt": {"type": "integer"},
                        "started": {"type": "integer"},
                        "finished": {"type": "integer"},
                        "status_code": _NULLABLE_INT,
                        "error": {"type": ["string", "null"]},
                    },
                },
            },
        },
    },
}


def _list(item: str) -> Doc:
    return {
        "type": "object",
        "required": ["object", "data", "has_more"],
        "additionalProperties": False,
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": ref(item)},
            "has_more": {"type": "boolean"},
        },
    }


_ENDPOINT = ok("the endpoint", ref("WebhookEndpoint"))


def paths() -> Doc:
    return {
        "/v1/webhook_endpoints": {
            "post": operation(
                "Create a webhook endpoint",
                operation_id="createWebhookEndpoint",
                tag=_TAG,
                description="Events of `enabled_events` are POSTed to `url`, signed "
                "(`Meter-Signature`, docs/webhooks.md). The answer holds the signing secret, "
                "shown this once.",
                body={
                    "type": "object",
                    "required": ["url", "enabled_events"],
                    "additionalProperties": False,
                    "properties": {"url": _URL, "enabled_events": _TYPES},
                },
                responses={"200": ok("the endpoint with its secret", ref("WebhookEndpoint"))},
            ),
            "get": operation(
                "List webhook endpoints, newest first",
                operation_id="listWebhookEndpoints",
                tag=_TAG,
                parameters=[
                    limit_parameter(10),
                    starting_after_parameter("an endpoint"),
                ],
                responses={"200": ok("a page of endpoints", _list("WebhookEndpoint"))},
            ),
        },
        "/v1/webhook_endpoints/{id}": {
            "get": operation(
                "Get a webhook endpoint",
                operation_id="getWebhookEndpoint",
                tag=_TAG,
                parameters=[_ID],
                responses={"200": _ENDPOINT},
                errors=(404,),
            ),
            "post": operation(
                "Update a webhook endpoint",
                operation_id="updateWebhookEndpoint",
                tag=_TAG,
                description="Absent fields stay as they are. `disabled: false` enables an "
                "endpoint again (also one disabled for failing).",
                parameters=[_ID],
                body={
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "url": _URL,
                        "enabled_events": _TYPES,
                        "disabled": {"type": "boolean"},
                    },
                },
                responses={"200": _ENDPOINT},
                errors=(404,),
            ),
            "delete": operation(
                "Delete a webhook endpoint with its deliveries",
                operation_id="deleteWebhookEndpoint",
                tag=_TAG,
                parameters=[_ID],
                responses={
                    "200": ok(
                        "deleted",
                        {
                            "type": "object",
                            "required": ["object", "id", "deleted"],
                            "properties": {
                                "object": {"const": "webhook_endpoint"},
                                "id": {"type": "string"},
                                "deleted": {"const": True},
                            },
                        },
                    )
                },
                errors=(404,),
            ),
        },
        "/v1/webhook_endpoints/{id}/rotate_secret": {
            "post": operation(
                "Roll a webhook endpoint's signing secret",
                operation_id="rotateWebhookEndpointSecret",
                tag=_TAG,
                description="A new secret, shown this once. The previous one keeps signing "
                "(a second `v1=`) for `expires_in` seconds, default 86400.",
                parameters=[_ID],
                body={
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "expires_in": {"type": "integer", "minimum": 0, "maximum": MAX_OVERLAP_S}
                    },
                },
                body_required=False,
                responses={"200": ok("the endpoint with its new secret", ref("WebhookEndpoint"))},
                errors=(404,),
            ),
        },
        "/v1/webhook_endpoints/{id}/deliveries": {
            "get": operation(
                "A webhook endpoint's deliveries, newest first, with their attempts",
                operation_id="listWebhookDeliveries",
                tag=_TAG,
                parameters=[
                    _ID,
                    limit_parameter(20),
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": list(DELIVERY_STATUSES)},
                    },
                ],
                responses={"200": ok("a page of deliveries", _list("WebhookDelivery"))},
                errors=(404,),
            ),
        },
        "/v1/webhook_endpoints/{id}/deliveries/{delivery}/redeliver": {
            "post": operation(
                "Send a delivery again",
                operation_id="redeliverWebhookDelivery",
                tag=_TAG,
                description="Due now, with a fresh 3-day retry window, whatever its status.",
                parameters=[_ID, _DELIVERY],
                responses={"200": ok("the delivery", ref("WebhookDelivery"))},
                errors=(404,),
            ),
        },
    }
