"""A real Prometheus scrapes the running `meter serve` app and `meter aggregate` process on
loopback, evaluates grafana/alerts.yml over what it scraped, and answers over its HTTP API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.ops.conftest import (
    Client,
    Prometheus,
    meter_exposition,
    post_sample_events,
    serve_metrics,
)


def value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


async def test_prometheus_scrapes_meter_and_evaluates_the_rules(
    client: Client, api_key: str, aggregator: str, prometheus_dir: Path
) -> None:
    aggregate = aggregator.removeprefix("http://").removesuffix("/metrics")
    await post_sample_events(client, api_key)
    with serve_metrics(client) as serve:
        scrape = {"meter-serve": [serve], "meter-aggregate": [aggregate]}
        await _scrape_and_evaluate(client, api_key, prometheus_dir, scrape)


async def _scrape_and_evaluate(
    client: Client, api_key: str, prometheus_dir: Path, scrape: dict[str, list[str]]
) -> None:
    async with Prometheus(prometheus_dir, scrape=scrape) as prometheus:

        async def both_up() -> bool:
            up = await prometheus.query("up == 1")
            return {s["metric"]["job"] for s in up} == set(scrape)

        await prometheus.poll(both_up, "a successful scrape of both processes")
        # The counter grows between scrapes, so rate() over them is above zero.
        await post_sample_events(client, api_key)

        async def accepted_rate() -> list[dict[str, Any]]:
            result = await prometheus.query('status:meter_events:rate1m{status="accepted"}')
            return [s for s in result if value(s) > 0]

        [recorded] = await prometheus.poll(accepted_rate, "the recording rule to see events")
        assert recorded["metric"] == {
            "__name__": "status:meter_events:rate1m",
            "status": "accepted",
        }

        # The lease alert compares shards seen by ingest with leases held by the aggregator:
        # across the two processes both are 4, so the alert's expression is empty.
        [shards] = await prometheus.query("count(count by (shard) (meter_stream_length))")
        [held] = await prometheus.query("sum(meter_aggregator_leases_held)")
        assert value(shards) == value(held) == 4
        assert await prometheus.query(_alert_expr(await prometheus.rules())) == []

        async def evaluated() -> list[dict[str, Any]] | None:
            rules = await prometheus.rules()
            return None if any(r["health"] == "unknown" for r in rules) else rules

        rules = await prometheus.poll(evaluated, "every rule to be evaluated once")
        broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
        assert not broken


def _alert_expr(rules: list[dict[str, Any]]) -> str:
    [rule] = [r for r in rules if r["name"] == "MeterAggregatorLeasesMissing"]
    return str(rule["query"])


async def test_ingest_requests_are_counted_by_code(client: Client, api_key: str) -> None:
    await post_sample_events(client, api_key)
    response = await client.post("/v1/events", data=b"{", headers={"Authorization": "Bearer x"})
    assert response.status == 401
    text = await meter_exposition(client)
    assert 'meter_ingest_requests_total{code="200"} 1.0' in text
    assert 'meter_ingest_requests_total{code="401"} 1.0' in text
