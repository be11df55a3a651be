"""The alert rules routes (meter/alerts/routes.py): usage alerts and their states."""

from __future__ import annotations

from meter.alerts import rules
from meter.openapi.common import Doc, ok, operation
from meter.paging import limit_parameter, starting_after_parameter

_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "the rule's id (`alr_…`)",
    "schema": {"type": "string", "minLength": 1, "maxLength": rules.MAX_ID_LENGTH},
}
_NUMBER = {"type": "string", "description": "a decimal number", "pattern": r"^[0-9]+(\.[0-9]+)?$"}
_THRESHOLDS_IN = {
    "type": "array",
    "minItems": 1,
    "maxItems": rules.MAX_THRESHOLDS,
    "items": {"oneOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]},
    "description": "positive and distinct; `amount` thresholds are integers (minor units), "
    "`percent_of_limit` ones percentages",
}
RULE: Doc = {
    "type": "object",
    "required": [
        "object",
        "id",
        "customer",
        "meter",
        "filter",
        "kind",
        "thresholds",
        "hard_limit",
        "created",
        "updated",
    ],
    "properties": {
        "object": {"const": "alert_rule"},
        "id": {"type": "string"},
        "customer": {"type": ["string", "null"], "description": "null: every customer"},
        "meter": {
            "type": ["string", "null"],
            "description": "null: the whole invoice (an `amount` rule)",
        },
        "filter": {"type": "object", "additionalProperties": {"type": "string"}},
        "kind": {"enum": list(rules.KINDS)},
        "thresholds": {"type": "array", "items": _NUMBER},
        "hard_limit": {"type": "boolean"},
        "created": {"type": "integer"},
        "updated": {"type": "integer"},
    },
}
_DELETED = {
    "type": "object",
    "required": ["object", "id", "deleted"],
    "properties": {
        "object": {"const": "alert_rule"},
        "id": {"type": "string"},
        "deleted": {"const": True},
    },
}
_STATES = {
    "type": "object",
    "required": ["object", "rule", "data"],
    "properties": {
        "object": {"const": "list"},
        "rule": {"type": "string"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["customer", "period", "value", "evaluated_at", "crossed", "blocked"],
                "properties": {
                    "customer": {"type": "string"},
                    "period": {
                        "type": "object",
                        "properties": {"start": {"type": "integer"}, "end": {"type": "integer"}},
                    },
                    "value": {"type": "string"},
                    "evaluated_at": {"type": "integer"},
                    "crossed": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"threshold": _NUMBER, "at": {"type": "integer"}},
                        },
                    },
                    "blocked": {"type": "boolean"},
                },
            },
        },
    },
}


def paths() -> Doc:
    create_body = {
        "type": "object",
        "required": ["kind", "thresholds"],
        "additionalProperties": False,
        "properties": {
            "customer": {"type": ["string", "null"], "maxLength": rules.MAX_ID_LENGTH},
            "meter": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": rules.MAX_ID_LENGTH,
                "description": "required but for `amount` rules; absent or null, an `amount` "
                "rule measures the customer's whole upcoming invoice so far (the usage API's "
                "`invoice.total`, licensed fees included) and cannot have a `hard_limit`",
            },
            "filter": {
                "type": "object",
                "maxProperties": 3,
                "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 500},
                "description": 'dimension values ({"model": "large"}), `units` rules only',
            },
            "kind": {"enum": list(rules.KINDS)},
            "thresholds": _THRESHOLDS_IN,
            "hard_limit": {"type": "boolean"},
        },
    }
    update_body = {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {"thresholds": _THRESHOLDS_IN, "hard_limit": {"type": "boolean"}},
    }
    return {
        "/v1/alert_rules": {
            "post": operation(
                "Create a usage alert rule",
                operation_id="createAlertRule",
                tag="alerts",
                description="Thresholds on a customer's (or every customer's) usage of a meter "
                "in its billing period, or (an `amount` rule without `meter`) on its whole "
                "upcoming invoice; each crossing is announced once per period by a webhook "
                "event (docs/alerts.md).",
                body=create_body,
                responses={"200": ok("the rule", RULE)},
                errors=(400,),
            ),
            "get": operation(
                "List the usage alert rules",
                operation_id="listAlertRules",
                tag="alerts",
                description="Oldest first, a page at a time (`has_more`: another page follows).",
                parameters=[limit_parameter(10), starting_after_parameter("a rule")],
                responses={
                    "200": ok(
                        "the tenant's rules",
                        {
                            "type": "object",
                            "required": ["object", "data", "has_more"],
                            "properties": {
                                "object": {"const": "list"},
                                "data": {"type": "array", "items": RULE},
                                "has_more": {"type": "boolean"},
                            },
                        },
                    )
                },
            ),
        },
        "/v1/alert_rules/{id}": {
            "get": operation(
                "A usage alert rule",
                operation_id="getAlertRule",
                tag="alerts",
                parameters=[_ID],
                responses={"200": ok("the rule", RULE)},
                errors=(404,),
            ),
            "post": operation(
                "Change a rule's thresholds or hard limit",
                operation_id="updateAlertRule",
                tag="alerts",
                parameters=[_ID],
                body=update_body,
                responses={"200": ok("the rule", RULE)},
                errors=(400, 404),
            ),
            "delete": operation(
                "Delete a usage alert rule (its blocks are lifted)",
                operation_id="deleteAlertRule",
                tag="alerts",
                parameters=[_ID],
                responses={"200": ok("deleted", _DELETED)},
                errors=(404,),
            ),
        },
        "/v1/alert_rules/{id}/states": {
            "get": operation(
                "A rule's value and crossed thresholds per customer and billing period",
                operation_id="listAlertRuleStates",
                tag="alerts",
                parameters=[
                    _ID,
                    {
                        "name": "customer",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                responses={"200": ok("the states, latest period first", _STATES)},
                errors=(400, 404),
            ),
        },
    }
