"""Run-rate projection: usage so far until there is enough history, then the rate of a trailing
window over the time left; held for `last` meters."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meter.pricing import (
    HOLD_LAST,
    INSUFFICIENT_HISTORY,
    PERIOD_ENDED,
    TRAILING,
    Period,
    PricingError,
    elapsed_fraction,
    min_history,
    price_from_stripe,
    project_usage,
    trailing_start,
    trailing_window,
)

from .cases import GRADUATED_TIERS, METERED

HOUR = 3600
DAY = 24 * HOUR
MONTH = Period(1_767_225_600, 1_767_225_600 + 30 * DAY)  # 2026-01-01, 30 days
HALF_CENT = price_from_stripe(
    {"currency": "usd", "unit_amount_decimal": "0.5", "recurring": METERED}
)


def _usage(per_minute: dict[int, int], start: int, now: int, since: int) -> tuple[int, int]:
    """(usage so far, usage since `since`) of one event a minute, of `per_minute[hour index]`
    units (`per_minute[-1]` for other hours): counted event by event, not by the rule's
    arithmetic."""
    total = recent = 0
    for at in range(start, now, 60):
        value = per_minute.get((at - start) // HOUR, per_minute[-1])
        total += value
        if at >= since:
            recent += value
    return total, recent


def test_a_fresh_period_projects_its_usage_so_far() -> None:
    # 15 units 40 seconds into a month: linear would be 15 / (40 / 2,592,000) = 972,000 units.
    rate = project_usage(HALF_CENT, Decimal(15), MONTH, now=MONTH.start + 40)
    assert (rate.method, rate.projected_quantity, rate.window) == (INSUFFICIENT_HISTORY, 15, None)
    assert rate.projected_amount == rate.amount_so_far == 8  # 7.5 cents, half up


def test_history_needed_is_an_hour_or_half_a_percent_of_the_period() -> None:
    assert min_history(MONTH) == 12_960  # 0.5 % of 30 days: 3.6 h
    assert min_history(Period(0, DAY)) == HOUR
    just_before = project_usage(HALF_CENT, Decimal(9), MONTH, now=MONTH.start + 12_959)
    at = project_usage(HALF_CENT, Decimal(9), MONTH, now=MONTH.start + 12_960)
    assert (just_before.method, at.method) == (INSUFFICIENT_HISTORY, TRAILING)


def test_steady_usage_projects_the_steady_total() -> None:
    now = MONTH.start + 10 * DAY + 30 * 60  # ten days and half an hour: mid-hour
    since = trailing_start(now)
    so_far, recent = _usage({-1: 1}, MONTH.start, now, since)  # a unit a minute
    whole, _ = _usage({-1: 1}, MONTH.start, MONTH.end, MONTH.end)
    assert whole == 30 * 24 * 60
    rate = project_usage(HALF_CENT, Decimal(so_far), MONTH, now, recent=Decimal(recent))
    assert rate.method == TRAILING
    assert rate.window == Period(since, now)
    assert rate.projected_quantity == whole  # exact: the window's rate is the steady rate


def test_a_rising_rate_projects_more_than_linear() -> None:
    # A unit a minute for ten days, then ten a minute for the last day.
    now = MONTH.start + 11 * DAY
    minutes = dict.fromkeys(range(240), 1) | {-1: 10}
    so_far, recent = _usage(minutes, MONTH.start, now, trailing_start(now))
    assert (so_far, recent) == (14_400 + 14_400, 23 * 60 * 10)  # now on the hour: 23 h back
    rate = project_usage(HALF_CENT, Decimal(so_far), MONTH, now, recent=Decimal(recent))
    linear = Decimal(so_far) * 30 / 11  # the whole period's average pace: 78,545.45
    keeps_pace = so_far + 10 * 19 * DAY // 60  # the last day's pace for the 19 days left
    assert rate.projected_quantity == keeps_pace
    assert rate.projected_quantity > linear * 3  # 302,400


def test_without_recent_usage_the_window_is_the_elapsed_time() -> None:
    # A caller with only the total: the linear run rate, 100 units in a quarter → 400.
    now = MONTH.start + 30 * DAY // 4
    rate = project_usage(HALF_CENT, Decimal(100), MONTH, now)
    assert (rate.method, rate.window) == (TRAILING, Period(MONTH.start, now))
    assert rate.elapsed_fraction == Decimal("0.25")
    assert (rate.amount_so_far, rate.projected_quantity, rate.projected_amount) == (50, 400, 200)


def test_projection_prices_the_projected_total_through_the_tiers() -> None:
    tiered = price_from_stripe(
        {
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": GRADUATED_TIERS,
            "recurring": METERED,
        }
    )
    rate = project_usage(tiered, Decimal(300), MONTH, MONTH.start + 30 * DAY // 4)
    # 300 / 0.25 = 1200 units: 500 flat + 200 × 0.5 = 600 (not 4 × the 500 billed so far).
    assert (rate.amount_so_far, rate.projected_quantity, rate.projected_amount) == (500, 1200, 600)


def test_trailing_window_is_whole_hours_back_and_inside_the_period() -> None:
    now = MONTH.start + 5 * DAY + 17 * 60
    assert trailing_start(now) == MONTH.start + 4 * DAY + HOUR
    assert trailing_window(MONTH, now) == Period(MONTH.start + 4 * DAY + HOUR, now)
    early = MONTH.start + 5 * HOUR
    assert trailing_window(MONTH, early) == Period(MONTH.start, early)
    assert trailing_window(MONTH, MONTH.end + DAY) == Period(MONTH.end, MONTH.end)


@pytest.mark.parametrize(("now", "fraction"), [(-5, 0), (0, 0), (500, "0.5"), (1000, 1), (2000, 1)])
def test_elapsed_fraction_is_clamped(now: int, fraction: int | str) -> None:
    assert elapsed_fraction(Period(0, 1000), now) == Decimal(fraction)


def test_an_ended_period_projects_usage_so_far() -> None:
    rate = project_usage(HALF_CENT, Decimal(10), MONTH, now=MONTH.end, recent=Decimal(10))
    assert (rate.method, rate.projected_quantity) == (PERIOD_ENDED, 10)
    assert project_usage(HALF_CENT, Decimal(10), Period(5, 5), now=5).projected_quantity == 10


def test_last_meters_hold_their_value() -> None:
    rate = project_usage(HALF_CENT, Decimal(40), MONTH, now=MONTH.start + 9 * DAY, formula="last")
    assert rate.method == HOLD_LAST
    assert rate.projected_quantity == 40


def test_bad_inputs() -> None:
    with pytest.raises(PricingError):
        project_usage(HALF_CENT, Decimal(1), MONTH, now=1, formula="max")
    with pytest.raises(PricingError):
        project_usage(HALF_CENT, Decimal(-1), MONTH, now=1)
    with pytest.raises(PricingError):
        project_usage(HALF_CENT, Decimal(1), MONTH, now=MONTH.start + DAY, recent=Decimal(-1))
    with pytest.raises(PricingError):
        Period(10, 5)
