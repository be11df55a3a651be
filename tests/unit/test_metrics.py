"""The hot-path series: counted in plain Python, folded into prometheus-client's; the oracle
is prometheus-client itself, observing the same values."""

from __future__ import annotations

import math
import threading

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from meter.metrics import HotCounter, HotHistogram, Metrics

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)
# The bounds themselves, around them and beyond: `le` is inclusive.
values = st.one_of(
    st.sampled_from([0.0, *BUCKETS, 1e-9, 0.0010000001, 9.999999, 11.0, 1e9]),
    st.floats(min_value=0, max_value=100, allow_nan=False),
)


def exposition(observe: list[list[float]], hot: bool) -> dict[str, float]:
    registry = CollectorRegistry()
    histogram = Histogram("h", "h", buckets=BUCKETS, registry=registry)
    counter = Counter("c", "c", registry=registry)
    hot_histogram, hot_counter = HotHistogram(histogram), HotCounter(counter)
    for chunk in observe:  # a fold between chunks, as scrapes fall between requests
        for value in chunk:
            if hot:
                hot_histogram.observe(value)
                hot_counter.inc(2)
            else:
                histogram.observe(value)
                counter.inc(2)
        hot_histogram.fold()
        hot_counter.fold()
    lines = generate_latest(registry).decode().splitlines()
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in lines if not line.startswith("#"))
        if "_created" not in name
    }


@given(st.lists(st.lists(values, max_size=20), max_size=5))
def test_folding_gives_what_observing_gives(chunks: list[list[float]]) -> None:
    folded, observed = exposition(chunks, hot=True), exposition(chunks, hot=False)
    assert folded.keys() == observed.keys()
    for name, value in observed.items():
        # The sum is added up in another order: equal to rounding.
        assert (
            math.isclose(folded[name], value, rel_tol=1e-12)
            if name == "h_sum"
            else (folded[name] == value)
        ), name


def test_a_scrape_sees_every_request_counted_before_it() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.requests_ok.inc()
        metrics.request_seconds.observe(0.002)
    text = metrics.render().decode()
    assert 'meter_ingest_requests_total{code="200"} 3.0' in text
    assert 'meter_ingest_request_seconds_bucket{le="0.0025"} 3.0' in text
    assert 'meter_ingest_request_seconds_bucket{le="0.001"} 0.0' in text
    metrics.requests_ok.inc()
    assert 'meter_ingest_requests_total{code="200"} 4.0' in metrics.render().decode()


def test_folds_on_another_thread_lose_nothing() -> None:
    """Scrapes fold on the metrics server's thread while the event loop counts."""
    metrics = Metrics()
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            list(metrics.registry.collect())

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for _ in range(200_000):
            metrics.events_accepted.inc()
    finally:
        done.set()
        scraper.join()
    assert 'meter_events_total{reason="",status="accepted"} 200000.0' in metrics.render().decode()
