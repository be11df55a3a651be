"""The ingest, health and discovery endpoints, with limits taken from the server's own
settings and validator, so the document states the limits the server enforces."""

from __future__ import annotations

from meter.config import Settings
from meter.ingest.validation import (
    MAX_DIGITS,
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_PROPERTIES_DEPTH,
)
from meter.openapi.common import Doc, ok, operation, ref

# The API's stable `reason` codes (docs/api.md, "Ingest").
REJECTION_REASONS = (
    "invalid_event", "missing_id", "invalid_id", "id_too_long", "unknown_field",
    "missing_customer", "invalid_customer", "customer_too_long", "missing_meter",
    "invalid_meter", "meter_too_long", "invalid_value", "too_many_digits", "invalid_timestamp",
    "too_late", "in_future", "invalid_properties", "properties_too_large", "unknown_customer",
    "unknown_meter", "properties_too_deep", "over_limit",
)  # fmt: skip


def schemas(settings: Settings) -> Doc:
    return {
        "Event": {
            "type": "object",
            "required": ["id", "customer", "meter"],
            "additionalProperties": False,
            "properties": {
                "id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_ID_CHARS,
                    "description": "idempotency key, counted once: a retry within "
                    f"{settings.dedupe_window_s:.0f} s of its acceptance is answered "
                    "`duplicate`, a later one may be answered `accepted` (and is dropped)",
                },
                "customer": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_NAME_CHARS,
                    "description": "your customer id, or a Stripe `cus_` id",
                },
                "meter": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
                "value": {
                    "type": "number",
                    "minimum": 0,
                    "exclusiveMaximum": 10**MAX_DIGITS,
                    "default": 1,
                    "description": f"at most {MAX_DIGITS} significant digits",
                },
                "timestamp": {
                    "description": "RFC 3339 with an offset, or unix seconds; default: now. "
                    f"Older than the late window ({settings.late_window_s:.0f} s) or more than "
                    f"{settings.future_tolerance_s:.0f} s ahead: rejected",
                    "oneOf": [
                        {"type": "string", "format": "date-time"},
                        {"type": "number", "minimum": 0, "exclusiveMaximum": 1e11},
                    ],
                },
                "properties": {
                    "type": "object",
                    "description": f"at most {settings.max_properties_bytes} bytes as JSON, "
                    f"nesting at most {MAX_PROPERTIES_DEPTH} levels of objects/arrays",
                },
            },
        },
        "EventResult": {
            "type": "object",
            "required": ["id", "status"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": ["string", "null"], "description": "null when the id was unusable"},
                "status": {"enum": ["accepted", "duplicate", "rejected"]},
                "reason": {"enum": list(REJECTION_REASONS), "description": "when rejected"},
                "warning": {
                    "enum": ["unknown_customer", "unknown_meter"],
                    "description": "accepted (or duplicate), but billing does not know the "
                    "customer or meter (yet): the usage waits unattributed and bills only once "
                    "it does. METER_STRICT=1 rejects such events instead",
                },
                "message": {"type": "string", "description": "when rejected or warned"},
            },
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {
                "status": {"enum": ["ok", "unavailable"]},
                "checks": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "description": "`ok` or `down: …`"},
                },
            },
        },
        "IngestResponse": {
            "type": "object",
            "required": ["results", "accepted", "duplicates", "rejected"],
            "additionalProperties": False,
            "properties": {
                "results": {
                    "type": "array",
                    "items": ref("EventResult"),
                    "description": "one per event sent, in the same order",
                },
                "accepted": {"type": "integer", "minimum": 0},
                "duplicates": {"type": "integer", "minimum": 0},
                "rejected": {"type": "integer", "minimum": 0},
            },
        },
    }


def paths(settings: Settings) -> Doc:
    batch = {"type": "array", "items": ref("Event"), "maxItems": settings.max_batch_events}
    return {
        "/v1/events": {
            "post": operation(
                "Record usage events",
                operation_id="recordEvents",
                tag="ingest",
                description=f"One event or an array of up to {settings.max_batch_events}; "
                f"body at most {settings.max_body_bytes} bytes once decoded (Content-Encoding "
                "gzip or deflate accepted). Each item is "
                "answered on its own; retrying with the same ids is always safe.",
                body={"oneOf": [ref("Event"), batch]},
                responses={"200": ok("Per-event results, in order", ref("IngestResponse"))},
                errors=(400, 413, 429, 503),
            )
        },
        "/healthz": {
            "get": operation(
                "Liveness: the process answers",
                operation_id="getHealth",
                responses={
                    "200": ok(
                        "alive",
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}},
                        },
                    )
                },
                tag="operations",
                public=True,
            )
        },
        "/readyz": {
            "get": operation(
                "Readiness: Postgres and Redis answer",
                operation_id="getReadiness",
                responses={
                    status: ok(description, ref("Readiness"))
                    for status, description in (
                        ("200", "ready"),
                        ("503", "not ready; `checks` names the dependency that is down"),
                    )
                },
                tag="operations",
                public=True,
            )
        },
        "/openapi.json": {
            "get": operation(
                "This document",
                operation_id="getOpenApiDocument",
                responses={"200": ok("OpenAPI 3.1", {"type": "object"})},
                tag="operations",
                public=True,
            )
        },
    }
