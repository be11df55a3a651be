"""Log lines: JSON for machines by default, short text for people, libraries kept quiet."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from aggregator.metrics import AggregatorMetrics
from meter import logs
from meter.dev import pipeline_summary
from meter.metrics import Metrics
from reporter.metrics import ReporterMetrics


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    named = {n: logging.getLogger(n).level for n in ("stripe", "aiohttp.access")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in named.items():
        logging.getLogger(name).setLevel(was)


def emit(stream: io.StringIO, name: str, level: int, msg: str, **extra: object) -> list[str]:
    logging.getLogger(name).log(level, msg, extra=extra)
    return stream.getvalue().splitlines()


def test_json_is_the_default_when_stderr_is_not_a_terminal() -> None:
    out = io.StringIO()
    logs.setup("info", stream=out)
    [line] = emit(out, "meter.app", logging.INFO, "meter serving", shards=2)
    doc = orjson.loads(line)
    assert (doc["level"], doc["logger"], doc["msg"], doc["shards"]) == (
        "info",
        "meter.app",
        "meter serving",
        2,
    )


def test_a_terminal_gets_short_text_lines() -> None:
    out = Terminal()
    logs.setup("info", stream=out)
    [info] = emit(out, "meter.app", logging.INFO, "meter serving", shards=2, day="2026-12-07")
    assert info.split(" ", 1)[1] == "meter.app: meter serving shards=2 day=2026-12-07"
    [_, warning] = emit(out, "reporter.send", logging.WARNING, "retrying", why="a 503 answer")
    assert warning.split(" ", 1)[1] == "WARNING reporter.send: retrying why='a 503 answer'"


def test_an_explicit_format_wins_over_the_terminal() -> None:
    out = Terminal()
    logs.setup("info", "json", stream=out)
    [line] = emit(out, "meter.app", logging.INFO, "x")
    assert orjson.loads(line)["msg"] == "x"
    text = io.StringIO()
    logs.setup("info", "text", stream=text)
    [line] = emit(text, "meter.app", logging.INFO, "x")
    assert line.endswith(" meter.app: x")


def test_a_text_line_carries_the_exception() -> None:
    out = io.StringIO()
    logs.setup("info", "text", stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("meter.app").exception("failed")
    assert "meter.app: failed" in out.getvalue()
    assert "ValueError: boom" in out.getvalue()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_libraries_speak_from_warning_up_at_the_default_level(fmt: str) -> None:
    out = io.StringIO()
    logs.setup("info", fmt, stream=out)
    for name in ("stripe", "apscheduler.executors.default", "aiohttp.access", "asyncio"):
        emit(out, name, logging.INFO, f"{name} chatter")
    emit(out, "aggregator.worker", logging.INFO, "ours")
    emit(out, "apscheduler.scheduler", logging.WARNING, "job missed")
    lines = out.getvalue()
    assert "chatter" not in lines
    assert "ours" in lines
    assert "job missed" in lines


def test_at_debug_libraries_speak_but_stripe_never_logs_bodies() -> None:
    out = io.StringIO()
    logs.setup("debug", "text", stream=out)
    emit(out, "apscheduler.executors.default", logging.INFO, "Running job")
    emit(out, "asyncio", logging.DEBUG, "Using selector")
    emit(out, "stripe", logging.INFO, "Request to Stripe api path=/v1/customers")
    emit(out, "stripe", logging.DEBUG, "body: email=someone@example.com")
    lines = out.getvalue()
    assert "Running job" in lines
    assert "Using selector" in lines
    assert "Request to Stripe api" in lines
    assert "someone@example.com" not in lines


def test_the_pipeline_summary_reads_the_processes_own_metrics() -> None:
    api, aggregator, reporter = Metrics(), AggregatorMetrics(), ReporterMetrics()
    api.events.labels("accepted", "").inc(5)
    api.events.labels("duplicate", "").inc(2)
    api.events.labels("rejected", "bad_meter").inc(1)
    aggregator.events.labels("0").inc(3)
    aggregator.events.labels("1").inc(1)
    aggregator.lag_seconds.labels("0").set(0.2)
    aggregator.lag_seconds.labels("1").set(2.6)
    reporter.events_sent.inc(2)
    reporter.outbox_depth.set(1)
    line = pipeline_summary(api.registry, aggregator.registry, reporter.registry)
    assert line == (
        "pipeline: 5 accepted → 4 aggregated → 2 meter events sent to Stripe · "
        "aggregator lag 3s · outbox 1"
    )
