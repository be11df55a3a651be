"""Alert rules: promtool accepts them, their unit tests pass, and each alert is documented and
tested both firing and not firing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.integration.ops.conftest import ALERTS, GRAFANA, Prometheus, tool

ALERTS_TEST = GRAFANA / "alerts_test.yml"
# `alertname: X` then its `exp_alerts:`; `[]` means "not firing at that time".
_CASE = re.compile(r"alertname:\s*(\w+)\s*\n\s*exp_alerts:[ \t]*(\[\])?")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_fails_when_an_alert_changes(tmp_path: Path) -> None:
    """The unit tests pin thresholds: the lag tests against a loosened rule file fail."""
    header, tests = ALERTS_TEST.read_text().split("\ntests:\n")
    cases = re.split(r"(?m)^(?=  - )", tests)
    lag_cases = [c for c in cases if "alertname: MeterAggregatorLagHigh" in c]
    assert lag_cases
    (tmp_path / "alerts_test.yml").write_text(header + "\ntests:\n" + "".join(lag_cases))
    (tmp_path / "alerts.yml").write_text(
        ALERTS.read_text().replace(
            "max by (shard) (meter_aggregator_lag_seconds) > 300",
            "max by (shard) (meter_aggregator_lag_seconds) > 3000",
        )
    )
    result = promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode != 0
    assert "MeterAggregatorLagHigh" in result.stdout + result.stderr


async def test_every_alert_has_severity_runbook_and_both_test_cases(prometheus_dir: Path) -> None:
    async with Prometheus(prometheus_dir, scrape={}) as prometheus:
        rules = await prometheus.rules()
    alerts = {r["name"]: r for r in rules if r["type"] == "alerting"}
    assert len(alerts) >= 10
    firing: set[str] = set()
    quiet: set[str] = set()
    for name, empty in _CASE.findall(ALERTS_TEST.read_text()):
        (quiet if empty else firing).add(name)
    for name, rule in alerts.items():
        assert rule["labels"].get("severity") in {"page", "ticket"}, name
        runbook = rule["annotations"].get("runbook", "")
        assert len(runbook) > 20, f"{name}: annotations.runbook says what to do"
        assert "\n" not in runbook.strip(), f"{name}: the runbook is one line"
        assert rule["annotations"].get("summary"), name
        assert name in firing, f"{name}: no promtool test where it fires"
        assert name in quiet, f"{name}: no promtool test where it stays quiet"
    assert (firing | quiet) <= set(alerts), "tests name alerts that do not exist"
