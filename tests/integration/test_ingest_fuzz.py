"""Random bodies through the real HTTP stack: a client's mistake is never a 500."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_validation import event_like, json_values

bodies = (
    st.binary(max_size=300)
    | json_values.map(orjson.dumps)
    | st.lists(event_like, max_size=8).map(orjson.dumps)
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=bodies)
async def test_random_bodies_never_yield_a_server_error(
    client: TestClient[object, object], api_key: str, body: bytes
) -> None:
    response = await client.post(
        "/v1/events", data=body, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status in (200, 400), await response.text()
    doc: dict[str, Any] = await response.json()
    if response.status == 200:
        n = len(doc["results"])
        assert doc["accepted"] + doc["duplicates"] + doc["rejected"] == n
    else:
        assert doc["error"]["message"]
