"""The retry schedule: pure functions, no clock, no network."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meter_client.retry import RetryPolicy, is_retryable_status, parse_retry_after


@pytest.mark.parametrize(("status", "retryable"), [
    (400, False), (401, False), (404, False), (413, False), (408, True), (429, True),
    (500, True), (502, True), (503, True), (504, True),
])  # fmt: skip
def test_only_statuses_a_resend_can_fix_are_retried(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None


def test_backoff_doubles_until_the_cap() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
    # rand=1 is the top of each step (exclusive in practice), rand=0 its half.
    assert [policy.backoff(a, 0.0) for a in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert [round(policy.backoff(a, 1.0), 9) for a in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.0]


@given(attempt=st.integers(0, 10_000), rand=st.floats(0, 1, exclude_max=True))
def test_backoff_stays_between_half_the_step_and_the_step(attempt: int, rand: float) -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=30.0)
    step = min(30.0, 0.2 * 2.0 ** min(attempt, 62))
    assert step / 2 <= policy.backoff(attempt, rand) <= step


@given(
    attempt=st.integers(0, 100),
    rand=st.floats(0, 1, exclude_max=True),
    retry_after=st.none() | st.floats(0, 10_000),
)
def test_delay_honours_retry_after_up_to_the_cap(
    attempt: int, rand: float, retry_after: float | None
) -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=30.0)
    delay = policy.delay(attempt, retry_after, rand)
    assert delay <= 30.0
    assert delay >= policy.backoff(attempt, rand)
    if retry_after is not None:
        assert delay == min(30.0, max(retry_after, policy.backoff(attempt, rand)))


def test_delay_waits_for_retry_after_when_backoff_is_shorter() -> None:
    assert RetryPolicy(base_delay=0.1, max_delay=30.0).delay(0, 5.0, 0.5) == 5.0


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="base_delay"):
        RetryPolicy(base_delay=5.0, max_delay=1.0)
