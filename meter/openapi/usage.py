"""The usage API's routes (meter/usage/routes.py). Response bodies are described loosely while
that API settles; parameters and error statuses are exact."""

from __future__ import annotations

from meter.openapi.common import Doc, ok, operation, ref

SCHEMAS: Doc = {
    "Amount": {
        "description": "an amount in the currency's minor unit: an integer, or, outside the "
        "signed 64-bit range, the exact integer as a decimal string (meter/jsonwire.py)",
        "oneOf": [
            {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
            {"type": "string", "pattern": "^-?[0-9]{19,}$"},
        ],
    },
    "Projection": {
        "description": "an item's usage projected to the end of its period "
        "(meter/pricing/runrate.py): `insufficient_history` (less than max(1 h, 0.5 % of the "
        "period) elapsed: the usage so far), `trailing_run_rate` (the usage so far plus the "
        "rate of `window` — the last 23 to 24 whole hours up to now, or the whole elapsed time "
        "if shorter; for a unique_count meter the whole elapsed time — times the time left), "
        "`period_ended`, `hold_last_value` / `hold_max_value` (gauges), `fixed_fee` (licensed)",
        "type": "object",
        "required": ["method", "quantity", "amount"],
        "properties": {
            "method": {
                "enum": [
                    "insufficient_history",
                    "trailing_run_rate",
                    "period_ended",
                    "hold_last_value",
                    "hold_max_value",
                    "fixed_fee",
                ]
            },
            "window": {
                "description": "the window the rate was measured over (unix seconds), "
                "`trailing_run_rate` only",
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["start", "end"],
                        "properties": {"start": {"type": "integer"}, "end": {"type": "integer"}},
                    },
                    {"type": "null"},
                ],
            },
            "elapsed_fraction": {"type": "string"},
            "quantity": {"type": "string"},
            "amount": {"oneOf": [ref("Amount"), {"type": "null"}]},
        },
    },
}
_AMOUNT_OR_NULL = {"oneOf": [ref("Amount"), {"type": "null"}]}
_INVOICE = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"total": ref("Amount"), "amount_due": ref("Amount")},
        },
        {"type": "null"},
    ]
}

_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "your customer id or the Stripe `cus_` id",
    "schema": {"type": "string", "minLength": 1},
}
_INSTANT = "unix seconds or ISO 8601 (a date or a time; naive means UTC)"


def _query(name: str, description: str, schema: Doc | None = None) -> Doc:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


# Usage per combination of dimension values (docs/dimensions.md).
_BREAKDOWN = [
    _query(
        "group_by",
        "up to 3 dimension keys, comma-separated (e.g. `model,region`): each metered item gets "
        "`groups` (usage: quantity, amount as its share of the item's amount by quantity for "
        "sum and count meters), each history row a `dimensions` object; a key an event lacks "
        "shows as `none`, usage over the cardinality guard as `_other`",
        {
            "type": "string",
            "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(,[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,2}$",
        },
    ),
    {
        "name": "filter",
        "in": "query",
        "required": False,
        "style": "deepObject",
        "explode": True,
        "description": "`filter[<key>]=<value>` (up to 3): only usage with these dimension "
        "values; the items' own quantities and amounts are unchanged",
        "schema": {
            "type": "object",
            "maxProperties": 3,
            "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 500},
        },
    },
]


def paths() -> Doc:
    return {
        "/v1/customers/{id}/usage": {
            "get": operation(
                "Usage, amounts and projected invoice of one billing period",
                operation_id="getCustomerUsage",
                tag="usage",
                parameters=[
                    _ID,
                    _query("period", f"`current` (default), `previous`, or an instant: {_INSTANT}"),
                    *_BREAKDOWN,
                ],
                responses={
                    "200": ok(
                        "usage per meter and item",
                        {
                            "type": "object",
                            "description": "the current subscription's items and invoice; "
                            "`other_subscriptions` lists every other live subscription of the "
                            "customer the same way (Stripe bills each for the same usage); "
                            "`final_invoice` is true for a subscription canceled inside its "
                            "period (its metered usage up to the cancel); an item with "
                            "`usage_held` has a Stripe meter meter cannot report to (inactive, "
                            "or formula count): its usage waits, unsent, until it can. An "
                            "invoice's lines of kind `pending` are the subscription's pending "
                            "invoice items (prorations; a flexible mode's usage of a price "
                            "changed mid-period). "
                            "Amounts (`amount`, `projection.amount`, invoice totals) are "
                            "integers in the currency's minor unit; one outside the signed "
                            "64-bit range (an unbillable run-rate projection) is the exact "
                            "integer as a decimal string: see `#/components/schemas/Amount`",
                            "properties": {
                                "billing_mode": {"enum": ["classic", "flexible"]},
                                "items": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "amount": _AMOUNT_OR_NULL,
                                            "projection": {
                                                "oneOf": [ref("Projection"), {"type": "null"}]
                                            },
                                        },
                                    },
                                },
                                "invoice": _INVOICE,
                                "projected_invoice": _INVOICE,
                                "other_subscriptions": {
                                    "type": "array",
                                    "items": {"type": "object"},
                                },
                            },
                        },
                    )
                },
                errors=(400, 404),
            )
        },
        "/v1/customers/{id}/usage/history": {
            "get": operation(
                "Usage per meter and hour or day, one page at a time",
                operation_id="getCustomerUsageHistory",
                tag="usage",
                parameters=[
                    _ID,
                    _query("from", f"{_INSTANT}; default: 7 days before `to`"),
                    _query("to", f"{_INSTANT}; default: now"),
                    _query("granularity", "bucket size", {"enum": ["hour", "day"]}),
                    _query("meter", "only this meter"),
                    _query("limit", "rows per page, 1..1000 (default 100)"),
                    _query("cursor", "`next_cursor` of the previous page"),
                    *_BREAKDOWN,
                ],
                responses={"200": ok("one page of buckets", {"type": "object"})},
                errors=(400, 404),
            )
        },
    }
