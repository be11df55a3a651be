"""GET /openapi.json: a valid OpenAPI 3.1 document that describes every route of the app, and
that the live server's answers conform to (schemathesis)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest
import schemathesis
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.openapi.checks import JsonSchemaError
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from meter.app import create_app
from meter.config import Settings
from meter.openapi import build_document

Client = TestClient[object, object]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]
# They call Stripe before anything a fuzzer can get wrong, and the test server has no Stripe:
# they would answer 503 "billing is not configured" by design. Billing's own tests cover them
# against the Stripe emulator.
NEEDS_STRIPE = {("POST", "/stripe/webhook"), ("POST", "/v1/customers/{id}/checkout-session")}
EXAMPLES_PER_OPERATION = 30


def test_the_document_is_valid_openapi_3_1(settings: Settings) -> None:
    doc = build_document(settings)
    assert doc["openapi"].startswith("3.1.")
    validate(doc)  # raises on an invalid document


HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def operation_ids(doc: dict[str, Any]) -> dict[tuple[str, str], str | None]:
    return {
        (method.upper(), path): op.get("operationId")
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    }


def operation_id_problems(doc: dict[str, Any]) -> list[str]:
    """Missing, repeated or not camelCase (what every generator turns into a method name
    without mangling)."""
    ids = operation_ids(doc)
    names = [op_id for op_id in ids.values() if op_id]
    return sorted(
        [f"{method} {path}: no operationId" for (method, path), op_id in ids.items() if not op_id]
        + [
            f"{name}: used {names.count(name)} times"
            for name in set(names)
            if names.count(name) > 1
        ]
        + [
            f"{n}: not camelCase"
            for n in names
            if not re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)*", n)
        ]
    )


def test_every_operation_has_a_unique_operation_id(settings: Settings) -> None:
    doc = build_document(settings)
    assert operation_id_problems(doc) == []
    validate(doc)  # still valid OpenAPI 3.1 with them
    ids = operation_ids(doc)
    assert ids[("POST", "/v1/events")] == "recordEvents"
    assert ids[("GET", "/v1/customers/{id}/usage")] == "getCustomerUsage"


def test_the_operation_id_check_sees_a_missing_repeated_or_odd_id(settings: Settings) -> None:
    doc = build_document(settings)
    del doc["paths"]["/healthz"]["get"]["operationId"]
    doc["paths"]["/readyz"]["get"]["operationId"] = "recordEvents"
    doc["paths"]["/openapi.json"]["get"]["operationId"] = "get_openapi"
    assert operation_id_problems(doc) == [
        "GET /healthz: no operationId",
        "get_openapi: not camelCase",
        "recordEvents: used 2 times",
    ]


def test_every_route_of_the_app_is_described_and_nothing_else(settings: Settings) -> None:
    app = create_app(settings)
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"  # HEAD comes with every GET
    }
    doc = build_document(settings)
    described = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert routes - described == set(), "routes missing from meter/openapi"
    assert described - routes == set(), "described operations the app does not serve"


def test_the_stated_limits_are_the_servers(settings: Settings) -> None:
    doc = build_document(settings.replace(max_batch_events=10))
    body = doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["oneOf"][1]["maxItems"] == 10


async def test_served_document(client: Client, settings: Settings) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert orjson.loads(await response.read()) == orjson.loads(
        orjson.dumps(build_document(settings))
    )


def fuzz(doc: dict[str, Any], base_url: str, api_key: str) -> list[str]:
    """Run schemathesis over every operation; returns the operations it exercised."""
    schema = schemathesis.openapi.from_dict(doc)
    exercised: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in NEEDS_STRIPE:
            continue

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,  # the same cases on every run
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, checks=CHECKS
            )

        run()
        exercised.append(operation.label)
    return exercised


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    client: Client, api_key: str, settings: Settings
) -> None:
    # schemathesis' client is blocking: it runs on a thread while this loop serves the app.
    exercised = await asyncio.to_thread(
        fuzz, build_document(settings), str(client.make_url("")), api_key
    )
    assert "POST /v1/events" in exercised
    assert "GET /readyz" in exercised
    assert len(exercised) >= 10


@pytest.mark.parametrize("broken", ["extra_field", "missing_status"])
async def test_the_fuzz_fails_when_the_document_disagrees_with_the_server(
    client: Client, api_key: str, settings: Settings, broken: str
) -> None:
    doc = build_document(settings)
    result = doc["components"]["schemas"]["EventResult"]
    if broken == "extra_field":
        del result["properties"]["status"]  # the server sends it; additionalProperties: false
        result["required"] = ["id"]
    else:
        result["required"].append("never_sent")
    only_ingest = {"/v1/events": doc["paths"]["/v1/events"]}
    with pytest.raises(FailureGroup) as failure:
        await asyncio.to_thread(
            fuzz, {**doc, "paths": only_ingest}, str(client.make_url("")), api_key
        )
    assert failure.group_contains(JsonSchemaError)
