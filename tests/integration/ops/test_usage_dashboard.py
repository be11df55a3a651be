"""The usage-by-dimension dashboard (Postgres): its SQL, as Grafana sends it, runs on a migrated
database holding folded usage and answers what the test's own sums of the posted events say."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from decimal import Decimal
from typing import Any

import asyncpg
from redis.asyncio import Redis

from aggregator.worker import Worker
from meter.config import Settings
from tests.integration.aggregator.conftest import Client, PeriodsAttributor, post_events
from tests.integration.ops.conftest import GRAFANA

DASHBOARD = GRAFANA / "dashboards" / "usage.json"
MODELS = ("small", "large")


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def as_grafana_sends(sql: str, values: dict[str, str], start: dt.datetime, end: dt.datetime) -> str:
    """Grafana's substitutions: `${name:sqlstring}` quoted and escaped, `$key` in titles raw,
    `$__timeFilter(col)` a BETWEEN of the dashboard's range."""
    sql = re.sub(r"\$\{(\w+):sqlstring\}", lambda m: _sql_literal(values[m.group(1)]), sql)
    sql = re.sub(
        r"\$__timeFilter\(([\w.]+)\)",
        lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'",
        sql,
    )
    assert "$" not in sql, sql
    return sql


def _dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def test_every_query_goes_to_the_postgres_datasource_variable() -> None:
    doc = _dashboard()
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["pg"]["query"] == "grafana-postgresql-datasource"
    for panel in doc["panels"]:
        assert panel["datasource"]["uid"] == "${pg}"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${pg}"
            assert target["rawSql"].strip()


async def test_the_panels_answer_the_usage_posted_by_combination(
    client: Client, api_key: str, redis: Redis, settings: Settings, db: asyncpg.Connection
) -> None:
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    declared = hour - dt.timedelta(hours=3)
    await db.execute(
        "INSERT INTO meter_dimensions (tenant, meter, effective_from, keys) "
        "VALUES ('acme', 'tokens', $1, '{model,region}')",
        declared,
    )
    events: list[dict[str, Any]] = []
    expected: Counter[tuple[str, str]] = Counter()  # (hour, model) → quantity
    for n in range(40):
        at = hour - dt.timedelta(hours=1 + n % 2) + dt.timedelta(minutes=n)  # past hours
        props = {"model": MODELS[n % 2], "region": "eu"} if n % 5 else {"region": "us"}
        events.append(
            {"id": f"d{n}", "customer": f"c{n % 3}", "meter": "tokens", "value": n + 1,
             "timestamp": at.isoformat(), "properties": props}
        )  # fmt: skip
        bucket = at.replace(minute=0, second=0, microsecond=0)
        expected[(bucket.isoformat(), str(props.get("model", "none")))] += n + 1
    # A meter without dimensions and another tenant's usage stay out of the panels.
    events.append({"id": "x", "customer": "c0", "meter": "calls", "value": 1000})
    await post_events(client, api_key, events)
    async with Worker(settings, redis, attributor=PeriodsAttributor()) as worker:
        await worker.drain()

    doc = _dashboard()
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    values = {"tenant": "acme", "meter": "tokens", "key": "model", "customer": ""}
    start, end = hour - dt.timedelta(hours=6), hour + dt.timedelta(hours=1)
    for name, answer in (("tenant", ["acme"]), ("meter", ["tokens"]), ("key", ["model", "region"])):
        rows = await db.fetch(as_grafana_sends(variables[name]["query"], values, start, end))
        assert [r[0] for r in rows] == answer, name

    by_key, combinations = (p["targets"][0]["rawSql"] for p in doc["panels"])
    rows = await db.fetch(as_grafana_sends(by_key, values, start, end))
    got = Counter({(r["time"].isoformat(), r["metric"]): r["quantity"] for r in rows})
    assert got == Counter({k: Decimal(v) for k, v in expected.items()})

    one = {**values, "customer": "c1"}
    rows = await db.fetch(as_grafana_sends(combinations, one, start, end))
    mine = [e for e in events if e["customer"] == "c1"]
    want: Counter[str] = Counter()
    for e in mine:
        props = e["properties"]
        want[json.dumps({"model": props.get("model", "none"), "region": props["region"]},
                        separators=(",", ":"))] += e["value"]  # fmt: skip
    assert {r["combination"]: r["quantity"] for r in rows} == want
    assert sum(r["events"] for r in rows) == len(mine)
    # Grafana's quoting keeps a customer id with a quote a value, not SQL.
    rows = await db.fetch(as_grafana_sends(combinations, {**values, "customer": "c'1"}, start, end))
    assert rows == []
