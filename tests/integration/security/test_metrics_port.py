"""Metrics (MRR, subscriptions by status, payment outcomes) are never on the public API port:
each process serves them on a metrics port of its own, on loopback unless told otherwise.
(`tests/e2e/test_cli.py` checks the same of `meter serve` as a process, one worker and two.)"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from meter import appkeys
from meter.config import Settings
from meter.errors import ConfigError
from meter.metrics import metrics_server
from meter.openapi import build_document


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_api_port_answers_404_on_metrics(client: Any, settings: Settings) -> None:
    response = await client.get("/metrics")
    assert response.status == 404
    assert (await response.json())["error"]["type"] == "invalid_request_error"
    assert "/metrics" not in build_document(settings)["paths"]


async def test_the_metrics_port_serves_them_on_loopback(client: Any, api_key: str) -> None:
    await client.post(
        "/v1/events",
        json={"id": "m1", "customer": "c", "meter": "m"},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    port = free_port()
    with metrics_server("127.0.0.1", port, client.app[appkeys.METRICS].registry):
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            assert response.status == 200
            text = await response.text()
    assert 'meter_events_total{reason="",status="accepted"} 1.0' in text
    assert "meter_billing_webhook_seconds" in text


def test_metrics_bind_loopback_unless_told_otherwise() -> None:
    settings = Settings.from_env({})
    assert settings.metrics_host == "127.0.0.1"
    assert settings.metrics_port != settings.port
    told = Settings.from_env({"METER_METRICS_HOST": "0.0.0.0", "METER_METRICS_PORT": "9200"})
    assert (told.metrics_host, told.metrics_port) == ("0.0.0.0", 9200)
    with pytest.raises(ConfigError):
        Settings.from_env({"METER_METRICS_PORT": "70000"})


def test_a_taken_metrics_port_is_a_clear_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(ConfigError, match="METER_METRICS_PORT"),
            metrics_server("127.0.0.1", port, CollectorRegistry()),
        ):
            pass
