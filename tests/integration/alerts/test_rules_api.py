"""/v1/alert_rules: create, list, get, update, delete; a 400 names the field at fault."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.integration.alerts.conftest import Client, create_rule


async def _call(client: Client, key: str, method: str, path: str, body: Any = None) -> Any:
    response = await client.request(
        method,
        path,
        data=None if body is None else orjson.dumps(body),
        headers={"Authorization": f"Bearer {key}"},
    )
    return response.status, await response.json()


async def test_create_list_get_update_delete(client: Client, api_key: str) -> None:
    rule = await create_rule(
        client,
        api_key,
        customer="c-1",
        meter="calls",
        kind="percent_of_limit",
        thresholds=[100, 50, "80.5"],
        hard_limit=True,
    )
    assert rule["id"].startswith("alr_")
    assert (rule["customer"], rule["meter"], rule["kind"], rule["hard_limit"]) == (
        "c-1",
        "calls",
        "percent_of_limit",
        True,
    )
    assert rule["thresholds"] == ["50", "80.5", "100"]  # ascending
    path = f"/v1/alert_rules/{rule['id']}"
    assert await _call(client, api_key, "GET", path) == (200, rule)
    status, listed = await _call(client, api_key, "GET", "/v1/alert_rules")
    assert (status, [r["id"] for r in listed["data"]]) == (200, [rule["id"]])
    status, updated = await _call(client, api_key, "POST", path, {"thresholds": [90]})
    assert (status, updated["thresholds"], updated["hard_limit"]) == (200, ["90"], True)
    status, updated = await _call(client, api_key, "POST", path, {"hard_limit": False})
    assert (status, updated["thresholds"], updated["hard_limit"]) == (200, ["90"], False)
    status, states = await _call(client, api_key, "GET", path + "/states")
    assert (status, states["data"]) == (200, [])
    assert await _call(client, api_key, "DELETE", path) == (
        200,
        {"object": "alert_rule", "id": rule["id"], "deleted": True},
    )
    assert (await _call(client, api_key, "GET", path))[0] == 404
    assert (await _call(client, api_key, "DELETE", path))[0] == 404


VALID = {"meter": "calls", "kind": "units", "thresholds": [10]}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"kind": "percent"}, "kind"),
        ({"kind": None}, "kind"),
        ({"meter": ""}, "meter"),
        ({"meter": 5}, "meter"),
        ({"customer": 7}, "customer"),
        ({"thresholds": []}, "thresholds"),
        ({"thresholds": "10"}, "thresholds"),
        ({"thresholds": [10, -1]}, "thresholds[1]"),
        ({"thresholds": [0]}, "thresholds[0]"),
        ({"thresholds": ["NaN"]}, "thresholds[0]"),
        ({"thresholds": [True]}, "thresholds[0]"),
        ({"thresholds": [10, 10]}, "thresholds"),
        ({"thresholds": list(range(1, 12))}, "thresholds"),
        ({"kind": "amount", "thresholds": [10.5]}, "thresholds[0]"),
        ({"hard_limit": "yes"}, "hard_limit"),
        ({"kind": "projected", "hard_limit": True}, "hard_limit"),
        ({"filter": "model=large"}, "filter"),
        ({"filter": {"model": 5}}, "filter"),
        ({"filter": {"bad key": "x"}}, "filter"),
        ({"filter": {"a": "1", "b": "2", "c": "3", "d": "4"}}, "filter"),
        ({"kind": "amount", "filter": {"model": "large"}}, "filter"),
        ({"filter": {"model": "large"}, "hard_limit": True}, "hard_limit"),
        ({"unknown": 1}, "unknown"),
        # Only an `amount` rule may go without a meter (it measures the whole invoice), and
        # then without a hard limit (a block is of one meter).
        ({"meter": None}, "meter"),
        ({"kind": "percent_of_limit", "meter": None}, "meter"),
        ({"kind": "projected", "meter": None}, "meter"),
        ({"kind": "amount", "meter": None, "hard_limit": True}, "hard_limit"),
    ],
)
async def test_each_bad_field_is_named(
    client: Client, api_key: str, change: dict[str, Any], param: str
) -> None:
    status, doc = await _call(client, api_key, "POST", "/v1/alert_rules", VALID | change)
    assert status == 400, doc
    assert doc["error"]["param"] == param, doc


async def test_bad_updates_and_bodies(client: Client, api_key: str) -> None:
    rule = await create_rule(client, api_key, **VALID)
    path = f"/v1/alert_rules/{rule['id']}"
    for body, param in (
        ({}, None),
        ({"kind": "amount"}, "kind"),
        ({"thresholds": [-5]}, "thresholds[0]"),
        ({"hard_limit": 1}, "hard_limit"),
    ):
        status, doc = await _call(client, api_key, "POST", path, body)
        assert (status, doc["error"]["param"]) == (400, param), body
    status, doc = await _call(client, api_key, "POST", "/v1/alert_rules", [1, 2])
    assert status == 400
    status, doc = await _call(client, api_key, "GET", path + "/states?limit=0")
    assert (status, doc["error"]["param"]) == (400, "limit")
    assert (await _call(client, api_key, "GET", "/v1/alert_rules/alr_nope"))[0] == 404
    assert (await _call(client, "mk_live_wrong", "GET", "/v1/alert_rules"))[0] == 401


async def test_rules_are_listed_a_page_at_a_time(client: Client, api_key: str) -> None:
    made = [
        (await _call(client, api_key, "POST", "/v1/alert_rules", VALID | {"customer": f"c-{i}"}))[
            1
        ]["id"]
        for i in range(3)
    ]
    status, first = await _call(client, api_key, "GET", "/v1/alert_rules?limit=2")
    assert (status, [r["id"] for r in first["data"]], first["has_more"]) == (200, made[:2], True)
    after = first["data"][-1]["id"]
    status, rest = await _call(client, api_key, "GET", f"/v1/alert_rules?starting_after={after}")
    assert (status, [r["id"] for r in rest["data"]], rest["has_more"]) == (200, made[2:], False)
    status, doc = await _call(client, api_key, "GET", "/v1/alert_rules?limit=0")
    assert (status, doc["error"]["param"]) == (400, "limit")


@pytest.mark.parametrize("kind", ["units", "percent_of_limit", "projected"])
async def test_only_an_amount_rule_may_leave_the_meter_out(
    client: Client, api_key: str, kind: str
) -> None:
    status, doc = await _call(
        client, api_key, "POST", "/v1/alert_rules", {"kind": kind, "thresholds": [10]}
    )
    assert (status, doc["error"]["param"]) == (400, "meter"), doc
    assert "`meter` is required" in doc["error"]["message"]
    assert "amount" in doc["error"]["message"]


async def test_an_amount_rule_without_meter_is_on_the_whole_invoice(
    client: Client, api_key: str
) -> None:
    rule = await create_rule(client, api_key, kind="amount", thresholds=[5000])
    assert (rule["meter"], rule["kind"], rule["hard_limit"]) == (None, "amount", False)
    path = f"/v1/alert_rules/{rule['id']}"
    assert await _call(client, api_key, "GET", path) == (200, rule)
    status, doc = await _call(client, api_key, "POST", path, {"hard_limit": True})
    assert (status, doc["error"]["param"]) == (400, "hard_limit"), doc
    status, updated = await _call(client, api_key, "POST", path, {"thresholds": [100, 200]})
    assert (status, updated["thresholds"]) == (200, ["100", "200"])
