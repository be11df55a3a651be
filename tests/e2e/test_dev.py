"""`meter dev` as a newcomer runs it: the whole pipeline, then usage visible everywhere."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from meter.embedded import free_port
from tests.e2e.test_cli import METER


async def poll(check: Any, what: str, attempts: int = 300) -> Any:
    """Call `check()` until it returns something truthy (bounded), else fail naming `what`."""
    for _ in range(attempts):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    pytest.fail(f"{what} did not happen")


async def test_meter_dev_runs_the_pipeline_from_ingest_to_stripe(
    empty_database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "METER_DATABASE_URL": empty_database_url,
        "METER_REDIS_URL": redis_url,
        "METER_REDIS_PREFIX": redis_prefix,
        "METER_SHARDS": "2",
        "METER_METRICS_PORT": str(free_port()),
    }
    env.pop("STRIPE_API_KEY", None)  # → the emulator
    dev = await asyncio.create_subprocess_exec(
        METER, "dev", "--port", str(port), env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert dev.stdout is not None
    banner = ""
    try:
        while "/usage" not in banner:
            line = await asyncio.wait_for(dev.stdout.readline(), 60)
            assert line, "meter dev exited before printing its banner"
            banner += line.decode()
        key = re.search(r"mk_live_[\w-]+", banner)
        emulator = re.search(r"stripe\s+(http://\S+)", banner)
        assert key is not None
        assert emulator is not None
        headers = {"Authorization": f"Bearer {key.group(0)}"}
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            events = [
                {"id": f"dev-{n}", "customer": "demo-customer", "meter": "api_calls", "value": 500}
                for n in range(3)
            ]
            async with http.post(
                f"{base}/v1/events", data=orjson.dumps(events), headers=headers
            ) as response:
                assert (await response.json())["accepted"] == 3

            async def invoiced() -> dict[str, Any] | None:
                async with http.get(
                    f"{base}/v1/customers/demo-customer/usage", headers=headers
                ) as response:
                    if response.status != 200:
                        return None  # the demo subscription may still be on its way (webhooks)
                    doc: dict[str, Any] = await response.json()
                # Without its subscription yet (webhooks still on their way) the usage comes
                # unpriced, per meter, with no invoice: wait for the priced answer.
                priced = doc["subscription"] is not None and doc["invoice"] is not None
                return doc if priced and doc["items"][0]["quantity"] == "1500" else None

            usage = await poll(invoiced, "usage in the projected invoice")
            # Graduated demo price: $5 flat + 1,000 × 1 ¢ + 500 × 0.5 ¢.
            assert usage["invoice"]["total"] == 500 + 1000 + 250

            async def reported() -> bool:
                async with http.get(f"{emulator.group(1)}/_emulator/meter_events") as response:
                    doc = await response.json()
                return sum(float(e["value"]) for e in doc["data"]) == 1500

            await poll(reported, "usage reported to the Stripe emulator")

            # Every process's metrics on the metrics port, none on the API port.
            metrics = re.search(r"metrics\s+(http://\S+)", banner)
            assert metrics is not None
            assert metrics.group(1) == f"http://127.0.0.1:{env['METER_METRICS_PORT']}/metrics"
            async with http.get(metrics.group(1)) as response:
                text = await response.text()
            for name in (
                'meter_events_total{reason="",status="accepted"} 3.0',
                "meter_aggregator_events_total",
                "meter_reporter_outbox_depth",
                "meter_billing_webhook_seconds",
            ):
                assert name in text, name
            async with http.get(f"{base}/metrics") as response:
                assert response.status == 404
    finally:
        dev.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(dev.wait(), 30) == 0


REPO = Path(__file__).resolve().parents[2]


def _curls(banner: str) -> list[str]:
    """The banner's curl commands, each with its continuation lines, as a shell would read them."""
    commands = re.findall(r"^curl .*?(?<!\\)$", banner, flags=re.MULTILINE | re.DOTALL)
    assert len(commands) == 2, banner
    return commands


async def _shell(command: str, cwd: Path) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", command, cwd=cwd, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, command
    return out


async def _lines(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode())


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs a git checkout to clone")
async def test_a_newcomer_clones_into_a_private_folder_and_runs_meter_dev(tmp_path: Path) -> None:
    """As a newcomer: clone into a private home, `meter dev` with nothing else running (the
    embedded Postgres and Redis, even though local ones answer here), paste the two curls, and
    read a console of short text lines with the pipeline summary."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    checkout = home / "meter"
    await _shell(f"git clone --quiet {REPO} {checkout}", tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METER_", "STRIPE_"))}
    env["HOME"] = str(home)
    port = free_port()
    dev = await asyncio.create_subprocess_exec(
        METER, "dev", "--port", str(port), env=env, cwd=checkout,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert dev.stdout is not None
    assert dev.stderr is not None
    console: list[str] = []
    reading = asyncio.create_task(_lines(dev.stderr, console))
    banner = ""
    try:
        while "/usage" not in banner:
            line = await asyncio.wait_for(dev.stdout.readline(), 60)
            if not line:
                await reading
                pytest.fail("meter dev exited before its banner:\n" + "".join(console))
            banner += line.decode()
        post, usage = _curls(banner)
        assert orjson.loads(await _shell(post, checkout))["accepted"] == 1

        async def counted() -> bool:
            doc = orjson.loads(await _shell(usage, checkout))
            return "items" in doc and [i["quantity"] for i in doc["items"]] == ["1"]

        await poll(counted, "the posted event in the customer's usage")

        async def summarized() -> bool:
            return any("pipeline: 1 accepted → 1 aggregated" in line for line in console)

        await poll(summarized, "the pipeline summary")
    finally:
        dev.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(dev.wait(), 30)
        await reading
        shutil.rmtree((checkout / ".meter" / "dev" / "pg").resolve(), ignore_errors=True)
    assert code == 0, "".join(console)
    # Short text lines, none of them JSON, and no library chatter (stripe requests, scheduler
    # jobs) at the default level.
    assert not [line for line in console if line.startswith("{")], "".join(console)
    chatter = re.compile(r"^\S+ (INFO|DEBUG)? ?(stripe|apscheduler|aiohttp|asyncio)\b")
    assert not [line for line in console if chatter.match(line)], "".join(console)
