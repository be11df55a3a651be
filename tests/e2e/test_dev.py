"""`meter dev` as a newcomer runs it: the whole pipeline, then usage visible everywhere."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from meter import devenv
from meter.embedded import free_port
from tests.e2e.devproc import running_dev
from tests.e2e.test_cli import METER


async def poll(check: Any, what: str, attempts: int = 300) -> Any:
    """Call `check()` until it returns something truthy (bounded), else fail naming `what`."""
    for _ in range(attempts):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    pytest.fail(f"{what} did not happen")


def dev_env(database_url: str | None, redis_url: str | None, redis_prefix: str) -> dict[str, str]:
    """The environment of a `meter dev` on the test's database and Redis (None: embedded ones)
    and the emulator, every metrics server on a free port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METER_", "STRIPE_"))}
    env |= {
        "METER_REDIS_PREFIX": redis_prefix,
        "METER_SHARDS": "2",
        "METER_METRICS_PORT": str(free_port()),
        "METER_AGGREGATOR_METRICS_PORT": str(free_port()),
        "METER_REPORTER_METRICS_PORT": str(free_port()),
        "METER_NOTIFIER_METRICS_PORT": str(free_port()),
        "METER_EVALUATOR_METRICS_PORT": str(free_port()),
    }
    if database_url is not None:
        env["METER_DATABASE_URL"] = database_url
    if redis_url is not None:
        env["METER_REDIS_URL"] = redis_url
    return env


async def test_meter_dev_runs_the_pipeline_from_ingest_to_stripe(
    empty_database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    env = dev_env(empty_database_url, redis_url, redis_prefix)
    async with running_dev(env, tmp_path, port) as dev:
        banner = dev.banner
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

            # Usage Stripe accepts and then rejects (no meter has the name) comes back as a
            # meter error report, through the thin-event destination meter dev made.
            async with http.post(
                f"{emulator.group(1)}/v1/billing/meter_events",
                data={"event_name": "no_such_meter", "payload[stripe_customer_id]": "cus_x"},
                headers={"Authorization": "Bearer sk_test_dev"},
            ) as response:
                assert response.status == 200, await response.text()

            async def error_reported() -> bool:
                metrics = f"http://127.0.0.1:{env['METER_METRICS_PORT']}/metrics"
                async with http.get(metrics) as response:
                    text = await response.text()
                return 'meter_billing_meter_error_reports_total{code="no_meter"} 1.0' in text

            await poll(error_reported, "the meter error report counted by the API")

            # Each process's metrics on the port its variable names, printed in the banner;
            # none on the API port.
            urls = dict(re.findall(r"(http://\S+/metrics) \((\w+)\)", banner))
            metrics_port = {
                "api": "METER_METRICS_PORT",
                "aggregator": "METER_AGGREGATOR_METRICS_PORT",
                "reporter": "METER_REPORTER_METRICS_PORT",
                "notifier": "METER_NOTIFIER_METRICS_PORT",
                "evaluator": "METER_EVALUATOR_METRICS_PORT",
            }
            assert {name: url for url, name in urls.items()} == {
                name: f"http://127.0.0.1:{env[var]}/metrics" for name, var in metrics_port.items()
            }
            expected = {
                "api": ['meter_events_total{reason="",status="accepted"} 3.0', "meter_billing_"],
                "aggregator": ["meter_aggregator_events_total"],
                "reporter": ["meter_reporter_outbox_depth"],
                "notifier": ["meter_notifier_pending_deliveries"],
                "evaluator": ["meter_evaluator_last_sweep_timestamp_seconds"],
            }
            for name, var in metrics_port.items():
                async with http.get(f"http://127.0.0.1:{env[var]}/metrics") as response:
                    text = await response.text()
                for metric in expected[name]:
                    assert metric in text, (name, metric)
                others = {n for n in expected if n != name}
                for other in others:
                    assert expected[other][0].split("{")[0] not in text, (name, other)
            async with http.get(f"{base}/metrics") as response:
                assert response.status == 404
    assert not (tmp_path / devenv.ENV_FILE).exists(), "stopped, meter dev leaves its env file"


async def test_meter_commands_in_another_terminal_use_the_running_dev(
    empty_database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """`.meter/dev/env` says where everything is; `meter keys list` there, with no
    METER_DATABASE_URL of its own, lists the key `meter dev` just made in its database."""
    port = free_port()
    env = dev_env(empty_database_url, redis_url, redis_prefix)
    async with running_dev(env, tmp_path, port) as dev:
        key = re.search(r"mk_live_[\w-]+", dev.banner)
        assert key is not None
        assert dev.env_file["METER_DATABASE_URL"] == empty_database_url
        assert dev.env_file["METER_REDIS_PREFIX"] == redis_prefix
        assert dev.env_file["METER_URL"] == f"http://127.0.0.1:{port}"
        assert dev.env_file["METER_API_KEY"] == key.group(0)
        assert dev.env_file["METER_DEV_PID"] == str(dev.proc.pid)
        assert dev.env_file["STRIPE_API_BASE"].startswith("http://127.0.0.1:")
        assert dev.env_file["METER_DEV_REPORTER_METRICS_URL"] == (
            f"http://127.0.0.1:{env['METER_REPORTER_METRICS_PORT']}/metrics"
        )
        other_terminal = {k: v for k, v in os.environ.items() if not k.startswith("METER_")}
        listed = await _run_meter(["keys", "list"], other_terminal, tmp_path)
        assert key.group(0)[:12] in listed, listed
        # An explicit variable wins over the file.
        mine = {**other_terminal, "METER_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
        proc = await asyncio.create_subprocess_exec(
            METER, "keys", "list", env=mine, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        assert proc.returncode != 0
        assert key.group(0)[:12].encode() not in out


async def _run_meter(args: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        METER, *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.parametrize("busy", ["api", "METER_AGGREGATOR_METRICS_PORT"])
async def test_a_busy_port_is_one_line_before_anything_starts(
    busy: str, redis_prefix: str, tmp_path: Path
) -> None:
    # No database or Redis given: the embedded ones would be started first, were anything.
    env = dev_env(None, None, redis_prefix)
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port if busy == "api" else int(env[busy])))
        holder.listen()
        proc = await asyncio.create_subprocess_exec(
            METER, "dev", "--port", str(port), env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode not in (0, None)
    lines = err.decode().splitlines()
    assert len(lines) == 1, err.decode()
    held = str(port) if busy == "api" else env[busy]
    assert f"port {held} on 127.0.0.1" in lines[0]
    assert "in use" in lines[0]
    assert out == b""
    dev_dir = tmp_path / devenv.DEV_DIR
    assert sorted(p.name for p in dev_dir.iterdir()) == ["lock"], "something was started"


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
    # Free metrics ports: the defaults may be held by another run on this machine.
    for name in (
        "METER_METRICS_PORT",
        "METER_AGGREGATOR_METRICS_PORT",
        "METER_REPORTER_METRICS_PORT",
        "METER_EVALUATOR_METRICS_PORT",
    ):
        env[name] = str(free_port())
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
