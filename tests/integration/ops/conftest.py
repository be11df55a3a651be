"""Fixtures for the operations checks: the real `meter aggregate` process with its metrics
server, a real Prometheus (Debian package) and the command-line tools they need."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient

from meter import appkeys
from meter.config import Settings
from meter.metrics import metrics_server
from tests.integration.ops.promql import exported_names

REPO = Path(__file__).resolve().parents[3]
GRAFANA = REPO / "grafana"
ALERTS = GRAFANA / "alerts.yml"
DEADLINE_S = 20.0
POLL_S = 0.1

Client = TestClient[object, object]


def tool(name: str) -> str:
    """Path of a command the checks need; missing is a failure (CI installs them), not a skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed; run `make ops-deps` (Debian packages)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a process with its output in `log` (a file: a full pipe would stall it)."""
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=out)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def post_sample_events(client: Client, api_key: str) -> None:
    """Accepted, duplicate and rejected events, so every ingest series has samples."""
    batch = uuid.uuid4().hex
    events: list[dict[str, Any]] = [
        {"id": f"{batch}-{i}", "customer": "cus_a", "meter": "calls", "value": 1} for i in range(5)
    ]
    events.append(dict(events[0]))  # a duplicate within the batch
    events.append({"id": f"{batch}-bad", "customer": "cus_a", "meter": "calls", "value": "x"})
    response = await client.post(
        "/v1/events", data=orjson.dumps(events), headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status == 200, await response.text()
    doc = await response.json()
    assert (doc["accepted"], doc["duplicates"], doc["rejected"]) == (5, 1, 1), doc


async def fetch_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, url
        return await response.text()


@pytest.fixture
async def aggregator(settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    """`meter aggregate` as a process on this test's database and Redis prefix; yields its
    /metrics URL once it holds every shard and has reported each one's lag."""
    port = free_port()
    env = {
        **os.environ,
        "METER_DATABASE_URL": settings.database_url,
        "METER_REDIS_URL": settings.redis_url,
        "METER_REDIS_PREFIX": settings.redis_prefix,
        "METER_SHARDS": str(settings.shards),
        "METER_AGGREGATOR_METRICS_PORT": str(port),
        "METER_AGGREGATOR_POLL_INTERVAL": "0.05",
    }
    log = tmp_path / "aggregate.log"
    proc = spawn([sys.executable, "-m", "meter", "aggregate"], log, env)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while True:
            assert proc.poll() is None, f"meter aggregate exited:\n{log_tail(log)}"
            try:
                text = await fetch_text(url)
            except aiohttp.ClientConnectionError:
                text = ""
            if text and _all_shards_reported(text, settings.shards):
                break
            assert loop.time() < deadline, f"aggregator not ready:\n{text}\n{log_tail(log)}"
            await asyncio.sleep(POLL_S)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture
async def reporter(settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    """`meter report` as a process against an in-process Stripe emulator; yields its /metrics
    URL once it has served its first scrape with the outbox gauges set."""
    from meter.stripe_emulator.server import running_emulator

    async with running_emulator() as emu:
        port = free_port()
        env = {
            **os.environ,
            "METER_DATABASE_URL": settings.database_url,
            "METER_REDIS_URL": settings.redis_url,
            "METER_REDIS_PREFIX": settings.redis_prefix,
            "STRIPE_API_KEY": emu.api_key,
            "STRIPE_API_BASE": emu.api_base,
            "STRIPE_METER_EVENTS_BASE": emu.meter_events_base,
            "METER_REPORTER_METRICS_PORT": str(port),
            "METER_REPORTER_POLL_INTERVAL": "0.05",
        }
        log = tmp_path / "report.log"
        proc = spawn([sys.executable, "-m", "meter", "report"], log, env)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DEADLINE_S
            while True:
                assert proc.poll() is None, f"meter report exited:\n{log_tail(log)}"
                try:
                    text = await fetch_text(url)
                except aiohttp.ClientConnectionError:
                    text = ""
                if "meter_reporter_outbox_depth " in text:
                    break
                assert loop.time() < deadline, f"reporter not ready:\n{text}\n{log_tail(log)}"
                await asyncio.sleep(POLL_S)
            yield url
        finally:
            stop_process(proc)


@pytest.fixture
async def notifier(settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    """`meter notify` as a process on this test's database; yields its /metrics URL once it has
    finished a round (its queue gauges read from Postgres)."""
    port = free_port()
    env = {
        **os.environ,
        "METER_DATABASE_URL": settings.database_url,
        "METER_NOTIFIER_METRICS_PORT": str(port),
        "METER_NOTIFIER_POLL_INTERVAL": "0.05",
    }
    log = tmp_path / "notify.log"
    proc = spawn([sys.executable, "-m", "meter", "notify"], log, env)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while True:
            assert proc.poll() is None, f"meter notify exited:\n{log_tail(log)}"
            try:
                text = await fetch_text(url)
            except aiohttp.ClientConnectionError:
                text = ""
            if "meter_notifier_pending_deliveries " in text:
                break
            assert loop.time() < deadline, f"notifier not ready:\n{text}\n{log_tail(log)}"
            await asyncio.sleep(POLL_S)
        yield url
    finally:
        stop_process(proc)


def _all_shards_reported(exposition: str, shards: int) -> bool:
    from prometheus_client.parser import text_string_to_metric_families

    lag_shards: set[str] = set()
    held = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "meter_aggregator_lag_seconds":
                lag_shards.add(sample.labels["shard"])
            elif sample.name == "meter_aggregator_leases_held":
                held = sample.value
    return held == shards and len(lag_shards) == shards


@contextlib.contextmanager
def serve_metrics(client: Client) -> Iterator[str]:
    """The test app's metrics on a metrics server of their own, as `meter serve` runs it;
    yields its `host:port`."""
    port = free_port()
    with metrics_server("127.0.0.1", port, client.app[appkeys.METRICS].registry):  # type: ignore[index]
        yield f"127.0.0.1:{port}"


async def meter_exposition(client: Client) -> str:
    with serve_metrics(client) as target:
        return await fetch_text(f"http://{target}/metrics")


def exported(*expositions: str) -> set[str]:
    names: set[str] = set()
    for text in expositions:
        names |= exported_names(text)
    return names


class Prometheus:
    """A real Prometheus on a loopback port with a temp data dir; use `async with`."""

    def __init__(self, workdir: Path, scrape: dict[str, list[str]]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in scrape.items()
            ],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Prometheus:
        binary = tool("prometheus")
        (self.workdir / "data").mkdir()
        self._proc = spawn(
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            self.log,
        )
        self._session = aiohttp.ClientSession()
        await self.poll(self._ready, "Prometheus ready")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._proc is not None:
            stop_process(self._proc)

    async def _ready(self) -> bool:
        assert self._session is not None
        assert self._proc is not None
        assert self._proc.poll() is None, f"prometheus exited:\n{log_tail(self.log)}"
        try:
            async with self._session.get(f"{self.url}/-/ready") as response:
                return response.status == 200
        except aiohttp.ClientConnectionError:
            return False

    async def poll(self, check: Any, what: str) -> Any:
        """Await `check()` until it returns something truthy; fail after DEADLINE_S."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while not (result := await check()):
            assert loop.time() < deadline, f"timed out waiting for {what}:\n{log_tail(self.log)}"
            await asyncio.sleep(POLL_S)
        return result

    async def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a success, an AssertionError otherwise."""
        assert self._session is not None
        async with self._session.get(f"{self.url}/api/v1/{path}", params=params) as response:
            doc = await response.json()
        assert doc["status"] == "success", (path, params, doc)
        return doc["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector (`[{"metric": {...}, "value": [t, "v"]}, …]`)."""
        data = await self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    async def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (recording and alerting), with its group's name as `group`."""
        data = await self.api("rules")
        return [{**rule, "group": g["name"]} for g in data["groups"] for rule in g["rules"]]


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Path:
    path = tmp_path / "prometheus"
    path.mkdir()
    return path
