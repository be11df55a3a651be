"""The usage API's routes (meter/usage/routes.py). Response bodies are described loosely while
that API settles; parameters and error statuses are exact."""

from __future__ import annotations

from meter.openapi.common import Doc, ok, operation

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


def paths() -> Doc:
    return {
        "/v1/customers/{id}/usage": {
            "get": operation(
                "Usage, amounts and projected invoice of one billing period",
                tag="usage",
                parameters=[
                    _ID,
                    _query("period", f"`current` (default), `previous`, or an instant: {_INSTANT}"),
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
                            "changed mid-period)",
                            "properties": {
                                "billing_mode": {"enum": ["classic", "flexible"]},
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
                tag="usage",
                parameters=[
                    _ID,
                    _query("from", f"{_INSTANT}; default: 7 days before `to`"),
                    _query("to", f"{_INSTANT}; default: now"),
                    _query("granularity", "bucket size", {"enum": ["hour", "day"]}),
                    _query("meter", "only this meter"),
                    _query("limit", "rows per page, 1..1000 (default 100)"),
                    _query("cursor", "`next_cursor` of the previous page"),
                ],
                responses={"200": ok("one page of buckets", {"type": "object"})},
                errors=(400, 404),
            )
        },
    }
