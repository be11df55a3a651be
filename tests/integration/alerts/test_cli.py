"""`meter alerts create|list|show|delete` against the test's database, as an operator runs it."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson

from meter.config import Settings
from tests.integration.aggregator.conftest import env_for


async def meter(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "meter", "alerts", *args],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_create_list_show_delete(settings: Settings) -> None:
    created = await meter(
        settings,
        "create",
        "--tenant", "acme",
        "--meter", "calls",
        "--kind", "units",
        "--thresholds", "100,50",
        "--hard-limit",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    rule = orjson.loads(created.stdout)
    assert (rule["thresholds"], rule["hard_limit"], rule["customer"]) == (["50", "100"], True, None)
    listed = await meter(settings, "list", "--tenant", "acme")
    assert listed.stdout.split("\t")[0] == rule["id"]
    assert (await meter(settings, "list", "--tenant", "other")).stdout == ""
    shown = await meter(settings, "show", "--tenant", "acme", rule["id"])
    assert orjson.loads(shown.stdout)["states"] == []
    missing = await meter(settings, "show", "--tenant", "other", rule["id"])
    assert missing.returncode == 2
    assert "no alert rule" in missing.stderr
    bad = await meter(
        settings, "create", "--tenant", "acme", "--meter", "calls", "--kind", "units",
        "--thresholds", "10,x",
    )  # fmt: skip
    assert (bad.returncode, "(thresholds[1])" in bad.stderr) == (2, True), bad.stderr
    deleted = await meter(settings, "delete", "--tenant", "acme", rule["id"])
    assert deleted.returncode == 0, deleted.stderr
    assert (await meter(settings, "list", "--tenant", "acme")).stdout == ""


async def test_an_amount_rule_without_meter(settings: Settings) -> None:
    created = await meter(
        settings, "create", "--tenant", "acme", "--kind", "amount", "--thresholds", "5000"
    )
    assert created.returncode == 0, created.stderr
    assert orjson.loads(created.stdout)["meter"] is None
    listed = await meter(settings, "list", "--tenant", "acme")
    assert listed.stdout.split("\t")[2] == "(invoice)"
    units = await meter(
        settings, "create", "--tenant", "acme", "--kind", "units", "--thresholds", "5"
    )
    assert (units.returncode, "(meter)" in units.stderr) == (2, True), units.stderr
