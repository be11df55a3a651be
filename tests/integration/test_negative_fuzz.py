"""Negative and unusual data on every route of the OpenAPI document, against the app with the
Stripe emulator behind it: never a 5xx, every 4xx in the error shape, and a refused request
leaves nothing behind (no event in the streams, no customer row, no Stripe call).

Two parts: schemathesis in its negative mode (data that breaks the document's schemas), and a
fixed catalogue of the inputs that once made 500s — Unicode digits, NUL, out-of-range dates,
numbers past 4,300 digits, bodies that are not in their Content-Encoding, deep JSON — sent to
every operation. docs/security.md lists what each guards.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from redis.asyncio import Redis
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from meter.openapi import build_document
from meter.redis_keys import Keys
from tests.integration.billing.conftest import Stack, stack  # noqa: F401

NEGATIVE_EXAMPLES = 12
HUGE = "9" * 5000  # past Python's 4,300-digit limit of int(str)
DEEP = b'{"a":' * 300 + b"1" + b"}" * 300  # past orjson's 254 levels of writing


@dataclass(frozen=True)
class Effects:
    """What a request could leave behind."""

    stream_entries: int
    customers: int
    stripe_posts: int
    stripe_refusals: int


class Probe:
    """Reads the side effects from any thread, on the loop that serves the app."""

    def __init__(self, app_stack: Stack, db: asyncpg.Connection, redis: Redis) -> None:
        self.stack = app_stack
        self.db = db
        self.redis = redis
        self.loop = asyncio.get_running_loop()
        self.keys = Keys(app_stack.settings.redis_prefix)

    async def effects(self) -> Effects:
        streams = [self.keys.stream(s) for s in range(self.stack.settings.shards)]
        entries = sum([await self.redis.xlen(name) for name in streams])
        log = self.stack.emu.state.request_log
        return Effects(
            stream_entries=entries,
            customers=await self.db.fetchval("SELECT count(*) FROM customers"),
            stripe_posts=sum(1 for r in log if r["method"] == "POST"),
            stripe_refusals=sum(1 for r in log if (r["status"] or 0) >= 400),
        )

    def effects_from_thread(self) -> Effects:
        return asyncio.run_coroutine_threadsafe(self.effects(), self.loop).result(30)


def check_refusal(status: int, body: bytes, before: Effects, after: Effects, what: str) -> None:
    """No 5xx; a 4xx has the error shape and left nothing behind — unless Stripe itself refused
    a call that only Stripe can judge (an unknown price): then the customer it first created
    (once: its idempotency key) may remain, and nothing else."""
    assert status < 500, (what, status, body[:300])
    if status < 400:
        return
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise AssertionError(f"{what}: {status} is not JSON: {body[:200]!r}") from None
    assert set(doc) == {"error"}, (what, doc)
    assert doc["error"]["type"], (what, doc)
    assert doc["error"]["message"], (what, doc)
    assert after.stream_entries == before.stream_entries, what
    if after.stripe_refusals > before.stripe_refusals:
        return
    assert after == before, (what, status, doc, before, after)


def fuzz_negative(doc: dict[str, Any], base_url: str, api_key: str, probe: Probe) -> list[str]:
    schema = schemathesis.openapi.from_dict(doc)
    exercised: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        @hypothesis_settings(
            max_examples=NEGATIVE_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            before = probe.effects_from_thread()
            response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"})
            case.validate_response(response, checks=[not_a_server_error])
            after = probe.effects_from_thread()
            check_refusal(
                response.status_code, response.content, before, after, case.as_curl_command()
            )

        try:
            run()
        except Unsatisfiable:
            continue  # nothing to break: no parameter, no body (the catalogue covers it)
        exercised.append(operation.label)
    return exercised


async def test_schemathesis_negative_data_on_every_operation(
    stack: Stack,  # noqa: F811
    db: asyncpg.Connection,
    redis: Redis,
) -> None:
    probe = Probe(stack, db, redis)
    doc = build_document(stack.settings)
    exercised = await asyncio.to_thread(
        fuzz_negative, doc, str(stack.client.make_url("")), stack.api_key, probe
    )
    negatable = {
        f"{m.upper()} {p}"
        for p, item in doc["paths"].items()
        for m, op in item.items()
        if op.get("parameters") or op.get("requestBody")
    }
    assert set(exercised) == negatable


# --- the fixed catalogue ---------------------------------------------------------------------

PATH_IDS = ["a%00b", "%C2%B2", HUGE, "%FF%FE", "%E2%80%AE", "cus_" + "x" * 300]
QUERIES = [
    "period=%C2%B2",
    f"period={HUGE}",
    "period=99999999999999",
    "period=9999-12-31",
    "period=0001-01-01T00:00:00%2B14:00",
    "from=%D9%A3&to=%D9%A4",
    "to=99999999999999",
    "from=-1",
    f"limit={HUGE}",
    "limit=%C2%B2",
    "limit=0",
    "meter=a%00b",
    "cursor=MAB0ZXN0AHg",  # base64 of "0\x00test\x00x"
    "cursor=%00",
    f"cursor={'A' * 5000}",
    "granularity=%00",
    "a%00=1",
]
BODIES: list[tuple[str, bytes, dict[str, str]]] = [
    ("deep", DEEP, {}),
    ("deeper than the parser", b"[" * 5000 + b"]" * 5000, {}),
    ("not gzip", b'{"id": "e1"}', {"Content-Encoding": "gzip"}),
    ("not deflate", b"\x00\x01\x02", {"Content-Encoding": "deflate"}),
    ("gzip of invalid UTF-8", gzip.compress(b'{"id": "\xff"}'), {"Content-Encoding": "gzip"}),
    ("huge number", b'{"value": 1' + b"0" * 5000 + b"}", {}),
    ("huge integer event", b'{"id": "h", "customer": "c", "meter": "m", "value": 1e400}', {}),
    ("NaN", b'{"id": "n", "customer": "c", "meter": "m", "value": NaN}', {}),
    ("invalid UTF-8", b'{"id": "\xff\xfe"}', {}),
    ("NUL in strings", b'{"id": "a\\u0000", "customer": "c\\u0000", "price": "p\\u0000"}', {}),
    ("not an object", b'"x"', {}),
    ("empty", b"", {}),
]


def requests(doc: dict[str, Any]) -> Iterator[tuple[str, str, bytes, dict[str, str]]]:
    """(method, url, body, headers) of every catalogue input on every operation."""
    for template, item in doc["paths"].items():
        for method in (m.upper() for m in item):
            plain = template.replace("{id}", "c-1")
            if "{id}" in template:
                for ident in PATH_IDS:
                    yield method, template.replace("{id}", ident), b"{}", {}
            for query in QUERIES:
                yield method, f"{plain}?{query}", b"{}", {}
            if method == "POST":
                for _, body, headers in BODIES:
                    yield method, plain, body, headers


async def test_unusual_inputs_on_every_operation_get_4xx_and_change_nothing(
    stack: Stack,  # noqa: F811
    db: asyncpg.Connection,
    redis: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    probe = Probe(stack, db, redis)
    auth = {"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"}
    sent = 0
    for method, url, body, headers in requests(build_document(stack.settings)):
        before = await probe.effects()
        response = await stack.client.request(
            method, url, data=body, headers=auth | headers, skip_auto_headers={"Content-Type"}
        )
        raw = await response.read()
        after = await probe.effects()
        check_refusal(response.status, raw, before, after, f"{method} {url[:120]} {body[:40]!r}")
        if response.status == 200 and url.startswith("/v1/events"):
            assert orjson.loads(raw)["accepted"] == 0
            assert after.stream_entries == before.stream_entries
        sent += 1
    assert sent > 300
    # A client's mistake is no error of ours: nothing was logged at error level.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]
    assert (await stack.client.get("/readyz")).status == 200
