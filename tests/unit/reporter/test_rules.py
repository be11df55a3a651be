"""The reporter's pure rules: identifiers, outbox deltas, backoff, token bucket, calendar,
reconciliation arithmetic."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reporter.backoff import backoff_delay, retry_after_seconds, should_retry_header
from reporter.identifiers import MAX_IDENTIFIER, identifier, unit_key
from reporter.limiter import TokenBucket
from reporter.periods import (
    BillingPeriod,
    bills_no_more,
    holding,
    is_closed,
    open_target,
    starting_at,
)
from reporter.plan import Mark, Unit, carried_time, event_time, plan, stripe_value, wire_value
from reporter.reconcile_math import SentRow, ceil_minute, floor_minute, horizon_verdict, our_total

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
T0 = NOW - dt.timedelta(hours=5)


def unit(version: int, value: Decimal | int, *, absolute: bool = False) -> Unit:
    return Unit(
        tenant="acme",
        customer="cus_1",
        meter="calls",
        item="si_1",
        unit="period" if absolute else "bucket",
        unit_start=T0,
        period_start=T0 - dt.timedelta(days=3),
        version=version,
        value=Decimal(value),
        absolute=absolute,
        timestamp=T0,
    )


@given(st.text(max_size=100), st.text(max_size=100), st.integers(1, 2**63 - 1))
def test_identifiers_are_short_and_deterministic(customer: str, meter: str, version: int) -> None:
    key = unit_key("t" * 100, customer, meter, "si_" * 30, "bucket", 1_700_000_000_000)
    assert identifier(key, version) == identifier(key, version)
    assert len(identifier(key, version)) <= MAX_IDENTIFIER


def test_identifiers_differ_by_any_part_of_the_key_and_by_version() -> None:
    parts = ("acme", "cus_1", "calls", "si_1", "bucket", 0)
    base = unit_key(*parts)
    for i in range(6):
        changed = list(parts)
        changed[i] = 1 if i == 5 else str(changed[i]) + "x"
        assert unit_key(*changed) != base  # type: ignore[arg-type]
    assert identifier(base, 1) != identifier(base, 2)
    with pytest.raises(ValueError, match="versions start at 1"):
        identifier(base, 0)


@given(st.lists(st.decimals(-1000, 1000, places=3), min_size=1, max_size=20))
def test_deltas_add_up_to_the_bucket_value(increments: list[Decimal]) -> None:
    """Whatever versions the reporter sees, the deltas it sends sum to the latest value."""
    mark: Mark | None = None
    value = Decimal(0)
    sent = Decimal(0)
    for version, inc in enumerate(increments, start=1):
        value += inc
        p = plan(unit(version, value), mark, closed=False, target=None, now=NOW)
        assert p is not None
        if p.identifier is not None:
            assert p.value != 0
            sent += p.value
        mark = p.mark
    assert sent == value
    # An old version again: nothing.
    assert plan(unit(1, value), mark, closed=False, target=None, now=NOW) is None


def test_absolute_values_are_sent_as_is_and_unchanged_ones_not_at_all() -> None:
    first = plan(unit(3, 10, absolute=True), None, closed=False, target=None, now=NOW)
    assert first is not None
    assert (first.value, first.mark) == (10, Mark(3, Decimal(10), T0))
    same = plan(unit(5, 10, absolute=True), first.mark, closed=False, target=None, now=NOW)
    assert same is not None
    assert same.identifier is None
    assert same.mark == Mark(5, Decimal(10), T0)
    lower = plan(unit(6, 4, absolute=True), same.mark, closed=False, target=None, now=NOW)
    assert lower is not None
    assert lower.value == 4


def test_late_usage_is_carried_waits_or_is_recorded_never_dropped() -> None:
    current = BillingPeriod(NOW - dt.timedelta(hours=2), NOW + dt.timedelta(days=30), False)
    carried = plan(unit(2, 7), Mark(1, Decimal(5)), closed=True, target=current, now=NOW)
    assert carried is not None
    assert (carried.value, carried.event_time, carried.carried_from) == (2, current.start, T0)
    assert carried.status == "pending"
    waiting = plan(unit(2, 7), Mark(1, Decimal(5)), closed=True, target=None, now=NOW)
    assert waiting is not None
    assert (waiting.value, waiting.status, waiting.mark) == (2, "waiting", Mark(2, Decimal(7)))
    recorded = plan(
        unit(2, 7, absolute=True), Mark(1, Decimal(5)), closed=True, target=current, now=NOW
    )
    assert recorded is not None
    assert (recorded.value, recorded.status) == (7, "late")


def test_event_time_stays_inside_stripes_window_and_the_period() -> None:
    start = T0 - dt.timedelta(days=50)
    assert event_time(T0, start, NOW) == T0
    assert event_time(NOW - dt.timedelta(days=40), start, NOW) == NOW - dt.timedelta(days=34)
    assert event_time(NOW + dt.timedelta(minutes=3), start, NOW) == NOW
    # A period in a test clock's future (it starts after our clock): its start.
    ahead = NOW + dt.timedelta(days=40)
    assert event_time(ahead + dt.timedelta(hours=1), ahead, NOW) == ahead


def test_carried_usage_lands_inside_the_open_period_and_stripes_window() -> None:
    month = BillingPeriod(NOW - dt.timedelta(days=3), NOW + dt.timedelta(days=27), False)
    assert carried_time(month, NOW) == month.start
    assert carried_time(month, NOW + dt.timedelta(hours=5)) == month.start  # stable
    year = BillingPeriod(NOW - dt.timedelta(days=200), NOW + dt.timedelta(days=165), False)
    assert carried_time(year, NOW) == NOW - dt.timedelta(days=34)
    clock = BillingPeriod(NOW + dt.timedelta(days=60), NOW + dt.timedelta(days=90), False)
    assert carried_time(clock, NOW) == clock.start
    # In its finalization grace (the next period not known yet): still inside it.
    ended = BillingPeriod(NOW - dt.timedelta(days=30), NOW - dt.timedelta(minutes=5), False)
    assert carried_time(ended, NOW) == ended.start


def test_values_fit_stripes_15_digits_and_rounding_is_carried() -> None:
    assert stripe_value(Decimal("1.23456789012345678")) == Decimal("1.23456789012346")
    assert wire_value(Decimal("2.500")) == "2.5"
    assert wire_value(Decimal("1E+3")) == "1000"
    assert wire_value(Decimal("-0")) == "0"
    big = Decimal("1234567890.1234567890")
    p = plan(unit(1, big), None, closed=False, target=None, now=NOW)
    assert p is not None
    assert p.mark.value == p.value == stripe_value(big)


@given(st.integers(0, 80), st.floats(0.001, 10), st.floats(0.01, 100), st.integers(0, 2**32))
def test_backoff_is_bounded_and_jittered(attempt: int, base: float, cap: float, seed: int) -> None:
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0 <= delay <= min(cap, base * 2.0**attempt)
    assert (
        backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed), retry_after=500) >= 500
    )


def test_stripe_headers() -> None:
    assert retry_after_seconds({"Retry-After": "2"}) == 2
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds(None) is None
    assert should_retry_header({"Stripe-Should-Retry": "false"}) is False
    assert should_retry_header({"stripe-should-retry": "true"}) is True
    assert should_retry_header({}) is None


@given(
    st.floats(1, 10_000),
    st.integers(1, 500),
    st.lists(st.tuples(st.floats(0, 0.5), st.integers(1, 100)), max_size=60),
)
def test_token_bucket_never_exceeds_rate_plus_burst(
    rate: float, burst: int, takes: list[tuple[float, int]]
) -> None:
    """Events released by time t (take time + wait) never exceed burst + rate·t."""
    bucket = TokenBucket.full(rate, burst, 0.0)
    now = 0.0
    released: list[tuple[float, int]] = []
    for gap, n in takes:
        now += gap
        wait = bucket.take(n, now)
        assert wait >= 0
        released.append((now + wait, n))
        now += wait  # the caller waits before its next take
    for t, _ in released:
        total = sum(n for at, n in released if at <= t)
        assert total <= burst + rate * t + 1e-6 * max(1.0, rate * t)


def test_a_period_closes_by_its_invoice_or_its_end_plus_grace_never_by_usage() -> None:
    grace = dt.timedelta(minutes=45)
    ended = NOW - dt.timedelta(minutes=30)
    p1 = BillingPeriod(ended - dt.timedelta(days=30), ended, False)
    p2 = BillingPeriod(ended, ended + dt.timedelta(days=30), False)
    assert not is_closed(p1, NOW, grace)
    assert is_closed(p1, ended + grace, grace)  # no usage of p2 needed
    assert is_closed(BillingPeriod(p1.start, p1.end, True), NOW, grace)  # finalized early
    assert open_target([p1, p2], NOW, grace) == p2
    assert open_target([p1], ended + grace, grace) is None  # the next one is not known yet
    assert open_target([p1], NOW, grace) == p1  # still in its grace
    assert starting_at([p1, p2], p2.start) == p2
    assert starting_at([p1, p2], NOW) is None
    assert holding([p1, p2], p2.start) == p2
    assert holding([p1, p2], p1.start - dt.timedelta(seconds=1)) is None


def test_late_usage_is_carried_only_onto_its_own_meter() -> None:
    # A meter event names a customer and a meter, never an item: a period whose price is on
    # another meter would bill none of it.
    grace = dt.timedelta(minutes=45)
    ended = NOW - dt.timedelta(hours=2)
    calls = BillingPeriod(ended - dt.timedelta(days=30), ended, True, meter="calls")
    jobs = BillingPeriod(ended, ended + dt.timedelta(days=30), False, meter="jobs")
    assert open_target([calls, jobs], NOW, grace, "jobs") == jobs
    assert open_target([calls, jobs], NOW, grace, "calls") is None
    assert bills_no_more([calls, jobs], "calls")  # repriced onto another meter
    assert not bills_no_more([calls, jobs], "jobs")
    assert not bills_no_more([calls], "calls")  # the next period is not known yet: it waits
    gone = BillingPeriod(calls.start, calls.end, True, meter="calls", removed=True)
    assert bills_no_more([gone], "calls")  # the item was deleted
    licensed = BillingPeriod(ended, ended + dt.timedelta(days=30), False, meter="")
    assert open_target([calls, licensed], NOW, grace, "calls") is None
    assert bills_no_more([calls, licensed], "calls")  # repriced onto a licensed price
    unknown = BillingPeriod(ended, ended + dt.timedelta(days=30), False)
    assert open_target([calls, unknown], NOW, grace, "calls") == unknown  # meter not synced yet
    assert not bills_no_more([], "calls")


def test_our_total_and_horizon_verdicts() -> None:
    rows = [SentRow(Decimal(v), False, T0, i) for i, v in enumerate((1, 2, 3))]
    assert our_total(rows) == 6
    last = [SentRow(Decimal(5), True, T0, 2), SentRow(Decimal(9), True, T0, 1)]
    assert our_total(last) is None  # Stripe's pick between them is not documented
    later = T0 + dt.timedelta(seconds=1)
    assert our_total([*last, SentRow(Decimal(7), True, later, 0)]) == 7
    assert our_total([SentRow(Decimal(3), True, T0, 1), SentRow(Decimal(3), True, T0, 2)]) == 3
    # Within one second the fraction does not order rows: Stripe keeps whole seconds.
    split = [
        SentRow(Decimal(5), True, T0 + dt.timedelta(microseconds=900_000), 1),
        SentRow(Decimal(9), True, T0 + dt.timedelta(microseconds=100_000), 2),
    ]
    assert our_total(split) is None
    assert horizon_verdict(Decimal(10), Decimal(6), [Decimal(4)]) == "applied"
    assert horizon_verdict(Decimal(6), Decimal(6), [Decimal(4)]) == "missing"
    assert horizon_verdict(Decimal(8), Decimal(6), [Decimal(4)]) == "review"
    t = dt.datetime(2026, 1, 1, 10, 5, 30, tzinfo=dt.UTC)
    assert floor_minute(t).second == 0
    assert ceil_minute(t) - floor_minute(t) == dt.timedelta(minutes=1)
    assert ceil_minute(floor_minute(t)) == floor_minute(t)
