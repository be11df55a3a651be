"""Client mistakes in query strings, paths and bodies get a 4xx in the API's error shape that
names the problem — never a 500 — and a refused request changes nothing."""

from __future__ import annotations

import base64
import logging
from typing import Any

import asyncpg
import pytest

from tests.integration.billing.conftest import Stack, stack  # noqa: F401

Client = Any
HISTORY = "/v1/customers/c-1/usage/history"
USAGE = "/v1/customers/c-1/usage"
HUGE = "9" * 5000  # past Python's 4,300-digit limit of int(str)


async def get(client: Client, key: str, path: str) -> tuple[int, Any]:
    response = await client.get(path, headers={"Authorization": f"Bearer {key}"})
    return response.status, await response.json()


def assert_client_error(status: int, doc: Any, param: str | None = None) -> None:
    assert 400 <= status < 500, (status, doc)
    assert doc["error"]["type"] == "invalid_request_error", doc
    assert doc["error"]["message"], doc
    if param is not None:
        assert doc["error"]["param"] == param, doc


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("from=%C2%B2", "from"),  # "²" passes str.isdigit()
        ("to=%D9%A3", "to"),  # ARABIC-INDIC DIGIT THREE
        ("limit=%C2%B2", "limit"),
        (f"from={HUGE}", "from"),
        (f"limit={HUGE}", "limit"),
        ("to=99999999999999", "to"),  # year > 9999
        ("from=-5&to=10", "from"),
        ("meter=a%00b", "meter"),
    ],
)
async def test_history_parameters_out_of_their_domain_get_400(
    client: Client, api_key: str, query: str, param: str
) -> None:
    status, doc = await get(client, api_key, f"{HISTORY}?{query}")
    assert_client_error(status, doc, param)


@pytest.mark.parametrize(
    "period", ["99999999999999", "9999-12-31", HUGE, "%C2%B2", "0001-01-01", "1e10"]
)
async def test_usage_period_out_of_range_gets_400(
    client: Client, api_key: str, period: str
) -> None:
    status, doc = await get(client, api_key, f"{USAGE}?period={period}")
    assert_client_error(status, doc, "period")


async def test_a_cursor_holding_nul_gets_400(client: Client, api_key: str) -> None:
    cursor = base64.urlsafe_b64encode(b"0\x00me\x00ter").decode().rstrip("=")
    status, doc = await get(client, api_key, f"{HISTORY}?cursor={cursor}")
    assert_client_error(status, doc, "cursor")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/customers/a%00b/usage",
        "/v1/customers/a%00b/usage/history",
        "/v1/customers/a%00b/subscription",
        "/v1/customers/a%00b/entitlements",
    ],
)
async def test_nul_in_a_path_id_gets_400(client: Client, api_key: str, path: str) -> None:
    status, doc = await get(client, api_key, path)
    assert_client_error(status, doc, "id")


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize(
    "path", ["/v1/events", "/stripe/webhook", "/v1/customers/c-1/subscription/cancel"]
)
async def test_a_body_not_in_its_content_encoding_gets_400_without_an_error_log(
    client: Client, api_key: str, path: str, encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await client.post(
        path,
        data=b'{"id": "e1", "customer": "c", "meter": "m"}',
        headers={
            "Authorization": f"Bearer {api_key}",
            "Content-Encoding": encoding,
            "Content-Type": "application/json",
        },
    )
    doc = await response.json()
    assert_client_error(response.status, doc)
    assert "Content-Encoding" in doc["error"]["message"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_a_deep_checkout_body_is_refused_before_any_stripe_call(
    stack: Stack,  # noqa: F811
    db: asyncpg.Connection,
) -> None:
    deep = b'{"success_url": "https://x.test/ok", "prices": ["price_1"], "x": '
    deep += b'{"a":' * 300 + b"1" + b"}" * 300 + b"}"
    response = await stack.client.post(
        "/v1/customers/deep-1/checkout-session", data=deep, headers=stack.auth
    )
    doc = await response.json()
    assert_client_error(response.status, doc)
    assert "deep" in doc["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM customers") == 0
    assert stack.emu.state.request_log == []
