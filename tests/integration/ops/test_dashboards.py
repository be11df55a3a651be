"""Dashboards: provisioning-ready, in step with grafana/generate.py, valid PromQL, and naming only
metrics that `meter serve` and `meter aggregate` really export (scraped from running processes)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.integration.ops.conftest import (
    GRAFANA,
    Client,
    Prometheus,
    exported,
    fetch_text,
    meter_exposition,
    post_sample_events,
)
from tests.integration.ops.promql import exported_names, metric_names

DASHBOARDS = GRAFANA / "dashboards"
# Values Grafana substitutes before the query reaches Prometheus.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$high_water": "2000000"}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


# Dashboards on Postgres (SQL panels), checked by test_usage_dashboard.py.
SQL_DASHBOARDS = {"usage.json"}


def dashboards() -> dict[str, dict[str, Any]]:
    """The Prometheus dashboards."""
    return {
        p.name: json.loads(p.read_text())
        for p in sorted(DASHBOARDS.glob("*.json"))
        if p.name not in SQL_DASHBOARDS
    }


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every target of every panel of every dashboard."""
    return [
        (f"{name}: {panel['title']}", target["expr"])
        for name, dash in dashboards().items()
        for panel in panels(dash)
        for target in panel.get("targets", [])
    ]


def grafana_to_promql(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def test_dashboard_files_are_generated_from_generate_py() -> None:
    expected = generator().rendered()
    actual = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert set(actual) == set(expected), "run `python grafana/generate.py`"
    for name, text in expected.items():
        assert actual[name] == text, f"{name} is stale: run `python grafana/generate.py`"


def test_dashboards_are_provisioning_ready() -> None:
    found = dashboards()
    assert {"ingest.json", "pipeline.json", "billing.json"} <= set(found)
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS.glob("*.json")]
    assert len(set(uids)) == len(uids)
    for name, dash in found.items():
        text = json.dumps(dash)
        # Import-only placeholders (`${DS_PROMETHEUS}` + __inputs) break file provisioning.
        assert "__inputs" not in dash, name
        assert "DS_PROMETHEUS" not in text, name
        assert 36 <= dash["schemaVersion"] <= 41, name
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", name
        assert variables["datasource"]["query"] == "prometheus", name
        ids = [p["id"] for p in panels(dash)]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
        for panel in panels(dash):
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (name, panel["title"])
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}", (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", (name, panel["title"])
                assert target["expr"].strip(), (name, panel["title"])


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (status) (rate(meter_events_total{status="rejected",reason=~"a|b"}[5m]))',
            {"meter_events_total"},
        ),
        (
            "histogram_quantile(0.9, sum by (le, shard) (rate(x_bucket[$__rate_interval])))",
            {"x_bucket"},
        ),
        ("max(a) / $high_water > 1e-9 and on (shard) b offset 1d", {"a", "b"}),
        ("count(count by (shard) (s)) > sum without (instance) (h)", {"s", "h"}),
        (
            "absent(up) or sum(status:meter_events:rate1m) == 0",
            {"up", "status:meter_events:rate1m"},
        ),
        ('label_replace(rate(c_total[1m]), "dst", "$1", "src", "(.*)")', {"c_total"}),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_exported_names_include_type_suffixes_of_empty_families() -> None:
    text = (
        "# HELP c_total A counter.\n# TYPE c_total counter\n"
        "# HELP h A histogram.\n# TYPE h histogram\n"
        'h_bucket{le="+Inf"} 0.0\nh_count 0.0\nh_sum 0.0\n'
        "# HELP g A gauge.\n# TYPE g gauge\n"
    )
    assert exported_names(text) >= {"c_total", "h_bucket", "h_count", "h_sum", "g"}
    assert not exported_names(text) & {"c", "g_total", "h"}


async def test_every_metric_in_dashboards_and_alerts_is_exported(
    client: Client,
    api_key: str,
    aggregator: str,
    reporter: str,
    notifier: str,
    prometheus_dir: Path,
) -> None:
    await post_sample_events(client, api_key)
    names = exported(
        await meter_exposition(client),
        await fetch_text(aggregator),
        await fetch_text(reporter),
        await fetch_text(notifier),
    )
    async with Prometheus(prometheus_dir, scrape={}) as prometheus:
        rules = await prometheus.rules()
        recorded = {r["name"] for r in rules if r["type"] == "recording"}
        exprs = dashboard_exprs() + [(f"alerts.yml: {r['name']}", r["query"]) for r in rules]
        assert len(exprs) > 50
        assert recorded
        missing: dict[str, set[str]] = {}
        for where, expr in exprs:
            used = metric_names(expr)
            assert used, f"{where}: no metric found in {expr!r}"
            if unknown := used - names - recorded:
                missing[where] = unknown
            # Prometheus parses it (the query result itself is empty: nothing scraped).
            await prometheus.query(grafana_to_promql(expr))
    assert not missing, f"metrics no process exports: {missing}"


def test_dashboard_metrics_come_from_every_metric_module() -> None:
    """A guard against the dashboards drifting off a whole process: each metrics module is used."""
    used = {name for _, expr in dashboard_exprs() for name in metric_names(expr)}
    for prefix in ("meter_events", "meter_aggregator_", "meter_reporter_", "meter_billing_"):
        assert any(re.match(prefix, name) for name in used), prefix
