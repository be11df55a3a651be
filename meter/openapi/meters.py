"""The meters routes (meter/meters_api.py): a tenant's meter dimensions."""

from __future__ import annotations

from meter.dimensions import MAX_KEYS
from meter.openapi.common import Doc, ok, operation

_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "the meter (the events' `meter`)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 100},
}
_KEYS = {
    "type": "array",
    "maxItems": MAX_KEYS,
    "uniqueItems": True,
    "items": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
}
_ANSWER = {
    "type": "object",
    "required": ["object", "meter", "dimensions", "versions"],
    "properties": {
        "object": {"const": "meter_dimensions"},
        "meter": {"type": "string"},
        "dimensions": {**_KEYS, "description": "the keys in effect now"},
        "versions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"effective_from": {"type": "integer"}, "dimensions": _KEYS},
            },
        },
    },
}


def paths() -> Doc:
    return {
        "/v1/meters/{name}/dimensions": {
            "put": operation(
                "Set the property keys a meter's usage is broken down by",
                operation_id="setMeterDimensions",
                tag="usage",
                description="From `effective_from` (unix seconds or ISO 8601 with zone; default "
                "now, never the past) on, events are folded per combination of these keys' "
                "values (docs/dimensions.md). Usage folded before keeps its combination.",
                parameters=[_NAME],
                body={
                    "type": "object",
                    "required": ["dimensions"],
                    "additionalProperties": False,
                    "properties": {
                        "dimensions": _KEYS,
                        "effective_from": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
                    },
                },
                responses={"200": ok("the meter's dimension versions", _ANSWER)},
                errors=(400,),
            ),
            "get": operation(
                "A meter's dimensions, now and scheduled",
                operation_id="getMeterDimensions",
                tag="usage",
                parameters=[_NAME],
                responses={"200": ok("the meter's dimension versions", _ANSWER)},
            ),
        }
    }
