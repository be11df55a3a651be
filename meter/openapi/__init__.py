"""`GET /openapi.json`: the OpenAPI 3.1 description of meter's HTTP API.

Built in Python rather than kept as a JSON file so that the limits it states (batch size, body
size, id length, late window) are read from the same settings and constants the handlers
enforce. A test checks that every route of the app is described and schemathesis checks the
live server's answers against it.

Adding an endpoint: add its path to the `paths()` of its area (ingest.py, usage.py, billing.py),
built with `common.operation(...)`; a new area is a module whose `paths()` build_document merges.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import orjson
from aiohttp import web

from meter import appkeys
from meter.config import Settings
from meter.openapi import alerts, billing, ingest, meters, usage, webhooks
from meter.openapi.common import ERROR_SCHEMAS, RESPONSES, Doc


def _version() -> str:
    try:
        return version("meter")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def build_document(settings: Settings) -> Doc:
    """The whole document, for the limits in `settings`."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "meter",
            "version": _version(),
            "description": "Usage metering and billing. Errors are "
            '`{"error": {"type", "message", "param"}}`; a 503 carries Retry-After and means '
            "nothing was written.",
        },
        "security": [{"apiKey": []}],
        "tags": [
            {"name": "ingest", "description": "usage events"},
            {"name": "usage", "description": "usage so far and projected invoices"},
            {"name": "billing", "description": "Stripe webhook and self-service billing"},
            {"name": "alerts", "description": "usage alert rules and hard limits"},
            {"name": "webhooks", "description": "signed webhooks meter sends (docs/webhooks.md)"},
            {
                "name": "operations",
                "description": "health and this document (metrics are on the metrics port, "
                "METER_METRICS_HOST:METER_METRICS_PORT, not here)",
            },
        ],
        "paths": {
            **ingest.paths(settings),
            **usage.paths(),
            **meters.paths(),
            **alerts.paths(),
            **billing.paths(),
            **webhooks.paths(),
        },
        "components": {
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an ingest API key (`meter keys create`)",
                }
            },
            "schemas": {
                **ERROR_SCHEMAS,
                **ingest.schemas(settings),
                **billing.SCHEMAS,
                **usage.SCHEMAS,
                **webhooks.SCHEMAS,
            },
            "responses": RESPONSES,
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    """Serve the document (public: it describes the API, it reveals no data)."""
    doc = build_document(request.app[appkeys.SETTINGS])
    return web.Response(body=orjson.dumps(doc), content_type="application/json")
