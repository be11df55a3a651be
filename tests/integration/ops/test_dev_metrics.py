"""`make dev` shows what production shows: every metric a dashboard or alert rule names is on the
/metrics of some process `meter dev` runs, at the URLs its .meter/dev/env gives."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from meter.embedded import free_port
from tests.e2e.devproc import running_dev
from tests.e2e.test_dev import dev_env
from tests.integration.ops.conftest import (
    ALERTS,
    DEADLINE_S,
    POLL_S,
    _all_shards_reported,
    exported,
    fetch_text,
)
from tests.integration.ops.promql import metric_names
from tests.integration.ops.test_dashboards import dashboard_exprs

SHARDS = 2


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


async def test_every_dashboard_and_alert_metric_is_on_a_dev_process(
    empty_database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    env = dev_env(empty_database_url, redis_url, redis_prefix) | {"METER_SHARDS": str(SHARDS)}
    async with running_dev(env, tmp_path, port) as dev:
        urls = {
            name: dev.env_file[f"METER_DEV_{name}_METRICS_URL"]
            for name in ("API", "AGGREGATOR", "REPORTER", "NOTIFIER")
        }
        assert len(set(urls.values())) == 4, urls  # a port per process
        # Accepted, duplicate and rejected events: every ingest series gets samples.
        batch = uuid.uuid4().hex
        events: list[dict[str, Any]] = [
            {"id": f"{batch}-{i}", "customer": "demo-customer", "meter": "api_calls"}
            for i in range(5)
        ]
        events += [
            dict(events[0]),
            {"id": f"{batch}-x", "customer": "c", "meter": "m", "value": "x"},
        ]
        headers = {"Authorization": f"Bearer {dev.env_file['METER_API_KEY']}"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{dev.env_file['METER_URL']}/v1/events", data=orjson.dumps(events), headers=headers
            ) as response,
        ):
            doc = await response.json()
        assert (doc["accepted"], doc["duplicates"], doc["rejected"]) == (5, 1, 1), doc

        # The aggregator reports a shard's lag once it holds its lease.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while not _all_shards_reported(await fetch_text(urls["AGGREGATOR"]), SHARDS):
            assert loop.time() < deadline, "the dev aggregator never held every shard"
            await asyncio.sleep(POLL_S)
        names = exported(*[await fetch_text(url) for url in urls.values()])

    rules = alert_rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    exprs = dashboard_exprs() + [
        (f"alerts.yml: {rule.get('alert') or rule['record']}", rule["expr"]) for rule in rules
    ]
    assert len(exprs) > 50
    missing: dict[str, set[str]] = {}
    for where, expr in exprs:
        used = metric_names(expr)
        assert used, f"{where}: no metric found in {expr!r}"
        if unknown := used - names - recorded:
            missing[where] = unknown
    assert not missing, f"metrics no `meter dev` process exports: {missing}"
