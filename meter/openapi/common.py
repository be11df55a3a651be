"""Building blocks of the OpenAPI document: the error object, shared responses, `operation()`."""

from __future__ import annotations

from typing import Any

Doc = dict[str, Any]


def ref(name: str) -> Doc:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: Doc) -> Doc:
    return {"application/json": {"schema": schema}}


def ok(description: str, schema: Doc) -> Doc:
    return {"description": description, "content": json_content(schema)}


ERROR_SCHEMAS: Doc = {
    "Error": {
        "type": "object",
        "description": "Every error response: `type` is a stable code, `message` is for humans.",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["type", "message", "param"],
                "additionalProperties": False,
                "properties": {
                    "type": {"type": "string", "examples": ["invalid_request_error"]},
                    "message": {"type": "string"},
                    "param": {"type": ["string", "null"], "description": "the field at fault"},
                },
            }
        },
    }
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    }
}


def _error(description: str, headers: Doc | None = None) -> Doc:
    response: Doc = {"description": description, "content": json_content(ref("Error"))}
    if headers:
        response["headers"] = headers
    return response


# Referenced as responses["401"] etc.; their descriptions say when meter answers them.
RESPONSES: Doc = {
    "BadRequest": _error("The request cannot be understood; the message says what and where."),
    "Unauthorized": _error("Missing, unknown or revoked API key."),
    "PaymentRequired": _error("The payment provider declined the payment."),
    "NotFound": _error("No such object for this API key's tenant."),
    "Conflict": _error("The request does not fit the object's current state."),
    "PayloadTooLarge": _error("The body is over the size limit (once decoded)."),
    "UnsupportedEncoding": _error("A Content-Encoding other than gzip, deflate or identity."),
    "TooManyRequests": _error(
        "Over a rate limit — the API key's (ingest), the tenant's for billing calls to Stripe, "
        "or the server's for looking up API keys it does not know; nothing was read or written.",
        _RETRY_AFTER,
    ),
    "InternalError": _error("Our failure; nothing was applied, so a retry is safe."),
    "GatewayError": _error("The payment provider failed or refused the call."),
    "Unavailable": _error(
        "A dependency is down or saturated (or not configured); nothing was written.",
        _RETRY_AFTER,
    ),
}

_BY_STATUS = {
    400: "BadRequest",
    401: "Unauthorized",
    402: "PaymentRequired",
    404: "NotFound",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedEncoding",
    429: "TooManyRequests",
    500: "InternalError",
    502: "GatewayError",
    503: "Unavailable",
}


def operation(
    summary: str,
    *,
    operation_id: str,
    tag: str,
    responses: Doc,
    errors: tuple[int, ...] = (),
    body: Doc | None = None,
    body_required: bool = True,
    public: bool = False,
    parameters: list[Doc] | None = None,
    description: str | None = None,
) -> Doc:
    """One operation. `operation_id` is the method name generated clients give it: camelCase,
    verb first, unique in the document. `errors` lists the error statuses it can answer. Every
    operation may answer 400 (U+0000 in the path or query is refused everywhere), one with a
    body 413 and 415 (meter/bodies.py); 401 and 429 (the limit on looking up unknown API keys)
    are added unless the operation is `public` (needs no key)."""
    op: Doc = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": dict(responses),
    }
    if description:
        op["description"] = description
    if public:
        op["security"] = []
    bodies = (413, 415) if body is not None else ()
    for status in sorted({*errors, 400, *bodies, *(() if public else (401, 429))}):
        op["responses"][str(status)] = {"$ref": f"#/components/responses/{_BY_STATUS[status]}"}
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": json_content(body)}
    if parameters:
        op["parameters"] = parameters
    return op
