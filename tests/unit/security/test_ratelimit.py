"""The per-key token bucket (meter/ratelimit.py): pure, driven by an explicit clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meter.config import Settings
from meter.errors import ConfigError
from meter.ratelimit import RateLimiter


def test_a_full_bucket_admits_the_burst_then_refuses() -> None:
    limiter = RateLimiter(rate=10.0, burst=5)
    assert [limiter.acquire("k", 100.0) for _ in range(5)] == [0.0] * 5
    wait = limiter.acquire("k", 100.0)
    assert wait == pytest.approx(0.1)  # one token comes back every 1/rate s
    assert limiter.acquire("k", 100.0) == pytest.approx(0.1)  # a refusal takes nothing


def test_tokens_come_back_at_the_rate_and_no_more_than_the_burst() -> None:
    limiter = RateLimiter(rate=10.0, burst=5)
    for _ in range(5):
        limiter.acquire("k", 0.0)
    assert limiter.acquire("k", 0.05) == pytest.approx(0.05)
    assert limiter.acquire("k", 0.1) == 0.0
    assert limiter.acquire("k", 0.1) > 0
    # A long idle time refills the bucket only up to the burst.
    assert [limiter.acquire("k", 1000.0) for _ in range(6)].count(0.0) == 5


def test_keys_have_buckets_of_their_own() -> None:
    limiter = RateLimiter(rate=1.0, burst=1)
    assert limiter.acquire(b"a", 0.0) == 0.0
    assert limiter.acquire(b"a", 0.0) > 0
    assert limiter.acquire(b"b", 0.0) == 0.0


def test_memory_is_bounded_and_forgetting_full_buckets_changes_no_answer() -> None:
    limiter = RateLimiter(rate=1.0, burst=2, max_keys=3)
    limiter.acquire("busy", 0.0)
    limiter.acquire("busy", 0.0)
    for key in ("a", "b"):
        limiter.acquire(key, 0.0)
    limiter.acquire("c", 10.0)  # "a" and "b" are full again by now: forgotten
    assert len(limiter) <= 3
    assert limiter.acquire("busy", 10.0) == 0.0  # refilled: same answer as if remembered


@given(
    rate=st.floats(0.5, 1000),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=200),
)
def test_never_admits_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    limiter = RateLimiter(rate=rate, burst=burst)
    now, admitted = 0.0, 0
    for gap in gaps:
        now += gap
        if limiter.acquire("k", now) == 0.0:
            admitted += 1
    assert admitted <= burst + rate * now + 1e-6


@pytest.mark.parametrize(
    ("rate", "burst", "match"), [(0.0, 1, "rate"), (-1.0, 1, "rate"), (1.0, 0, "burst")]
)
def test_nonsense_limits_are_refused(rate: float, burst: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RateLimiter(rate=rate, burst=burst)


def test_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "METER_INGEST_RATE_LIMIT": "250.5",
            "METER_INGEST_RATE_BURST": "10",
            "METER_API_KEY_CACHE_TTL": "5s",
        }
    )
    assert (s.ingest_rate_limit, s.ingest_rate_burst, s.api_key_cache_ttl_s) == (250.5, 10, 5.0)
    default = Settings.from_env({})
    assert (default.ingest_rate_limit, default.ingest_rate_burst) == (10_000.0, 20_000)
    assert Settings.from_env({"METER_INGEST_RATE_LIMIT": "0"}).ingest_rate_limit == 0


@pytest.mark.parametrize(
    "env",
    [
        {"METER_INGEST_RATE_LIMIT": "-1"},
        {"METER_INGEST_RATE_LIMIT": "nan"},
        {"METER_INGEST_RATE_LIMIT": "fast"},
        {"METER_INGEST_RATE_BURST": "0"},
        {"METER_API_KEY_CACHE_TTL": "soon"},
    ],
)
def test_invalid_rate_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env)
