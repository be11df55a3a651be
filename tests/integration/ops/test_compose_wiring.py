"""compose.yaml's emulator profile, run without Docker: each `meter` service's command and
environment exactly as `docker-compose config` resolves them (with deploy/emulator.env), only
the compose network's names and fixed ports mapped to this machine (the test's database and
Redis prefix, free loopback ports). The processes must work together as compose wires them:
migrate, the emulator, serve, aggregate, evaluate, report, notify, the one-shot sync and the first
API key."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.ops.conftest import (
    DEADLINE_S,
    POLL_S,
    fetch_text,
    free_port,
    log_tail,
    spawn,
    stop_process,
)
from tests.integration.ops.promql import exported_names
from tests.integration.ops.test_deploy import EMULATOR_ENV, services

# The compose network's fixed ports that meter processes listen on.
COMPOSE_PORTS = (8080, 9100, 9101, 9102, 9103, 9104, 12111, 12112)
COMPOSE_DATABASE = re.compile(r"postgresql://\S+@postgres:5432/meter")


class Local:
    """Maps compose names and ports onto this machine, the same way for every service."""

    def __init__(self, database_url: str, redis_url: str, prefix: str, state: Path) -> None:
        self.ports = {port: free_port() for port in COMPOSE_PORTS}
        self.database_url = database_url
        self.redis_url = redis_url
        self.prefix = prefix
        self.state = state

    def text(self, value: str) -> str:
        value = COMPOSE_DATABASE.sub(self.database_url, value)
        value = value.replace("redis://redis:6379/0", self.redis_url)
        value = re.sub(r"\b(stripe-emulator|serve)(?=:\d)", "127.0.0.1", value)
        value = value.replace("/var/lib/meter/", f"{self.state}/")
        return re.sub(
            r"(?<=[:=])(\d{4,5})\b",
            lambda m: str(self.ports.get(int(m.group(1)), m.group(1))),
            value,
        )

    def process(self, service: dict[str, Any], *extra: str) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("METER_", "STRIPE_"))}
        for name, value in service["environment"].items():
            env[name] = self.text(str(value))
            if name.endswith("METRICS_PORT"):
                env[name] = str(self.ports.get(int(value), int(value)))
        env |= {
            "METER_REDIS_PREFIX": self.prefix,
            # The image's METER_HOST=0.0.0.0 and compose's metrics host stay on loopback here.
            "METER_METRICS_HOST": "127.0.0.1",
            "METER_PORT": str(self.ports[8080]),
        }
        argv = [self.text(arg) for arg in (list(extra) or service["command"])]
        return [sys.executable, "-m", "meter", *argv], env


class Running:
    """The long-running services as processes, each logging to a file of its own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.procs[name] = spawn(argv, self.directory / f"{name}.log", env)

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{log_tail(self.directory / f'{n}.log')}" for n in self.procs)

    async def wait_for(self, check: Any, what: str) -> None:
        """Until `check()` is truthy; every service must stay up meanwhile (no restart loop)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while True:
            for name, proc in self.procs.items():
                assert proc.poll() is None, f"{name} exited ({proc.returncode})\n{self.logs()}"
            try:
                if await check():
                    return
            except aiohttp.ClientConnectionError:
                pass
            assert loop.time() < deadline, f"timed out waiting for {what}\n{self.logs()}"
            await asyncio.sleep(POLL_S)

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_process(proc)


async def test_the_emulator_profile_runs_as_compose_wires_it(
    empty_database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    found = services(EMULATOR_ENV)
    local = Local(empty_database_url, redis_url, redis_prefix, tmp_path)

    def one_shot(name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        argv, env = local.process(found[name], *extra)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    migrated = one_shot("migrate")
    assert migrated.returncode == 0, migrated.stderr
    running = Running(tmp_path)
    try:
        for name in ("stripe-emulator", "serve", "aggregate", "report", "evaluate", "notify"):
            running.start(name, *local.process(found[name]))
        emulator = f"http://127.0.0.1:{local.ports[12111]}"
        api = f"http://127.0.0.1:{local.ports[8080]}"

        async def healthy() -> bool:
            # compose's healthchecks: the emulator's control API, serve's /readyz.
            await fetch_text(f"{emulator}/_emulator/health")
            await fetch_text(f"{api}/readyz")
            return True

        await running.wait_for(healthy, "the emulator and serve")

        # The one-shot sync against the emulator, then the documented first key.
        synced = one_shot("sync")
        assert synced.returncode == 0, synced.stdout + synced.stderr
        created = one_shot("meter", "keys", "create", "first", "--tenant", "default")
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip()
        assert key.startswith("mk_"), created.stdout

        events = [{"id": "compose-1", "customer": "c1", "meter": "api_calls", "value": 3}]
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{api}/v1/events",
                data=orjson.dumps(events),
                headers={"Authorization": f"Bearer {key}"},
            ) as response,
        ):
            assert response.status == 200, await response.text()
            assert (await response.json())["accepted"] == 1

        # Each process's metrics where deploy/prometheus.yml scrapes it (ports mapped).
        metrics = {
            "serve": "meter_events_total",
            "aggregate": "meter_aggregator_events_total",
            "report": "meter_reporter_outbox_oldest_seconds",
            "notify": "meter_notifier_pending_deliveries",
            "evaluate": "meter_evaluator_last_sweep_timestamp_seconds",
        }
        variable = {
            "serve": "METER_METRICS_PORT",
            "aggregate": "METER_AGGREGATOR_METRICS_PORT",
            "report": "METER_REPORTER_METRICS_PORT",
            "notify": "METER_NOTIFIER_METRICS_PORT",
            "evaluate": "METER_EVALUATOR_METRICS_PORT",
        }
        for name, metric in metrics.items():
            port = local.ports[int(found[name]["environment"][variable[name]])]
            url = f"http://127.0.0.1:{port}/metrics"

            async def exported(url: str = url, metric: str = metric) -> bool:
                return metric in exported_names(await fetch_text(url))

            await running.wait_for(exported, f"{metric} from {name}")

        async def aggregated() -> bool:
            port = local.ports[int(found["aggregate"]["environment"][variable["aggregate"]])]
            text = await fetch_text(f"http://127.0.0.1:{port}/metrics")
            folded = sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "meter_aggregator_events_total"
            )
            return folded == 1

        await running.wait_for(aggregated, "the event folded by aggregate")
    finally:
        running.stop()
    # The emulator keeps its state where compose mounts its volume.
    assert (tmp_path / "stripe.json").exists()
