"""Usage of a trial period is charged by no Stripe invoice: the reporter never carries it out of
its period once closed, nor carries a paid period's usage into a trial."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from reporter.periods import BillingPeriod, open_target
from reporter.plan import TRIAL_USAGE, Mark, plan

from .test_rules import NOW, T0, unit

GRACE = dt.timedelta(minutes=45)
TRIAL = BillingPeriod(NOW - dt.timedelta(days=7), NOW - dt.timedelta(hours=2), True, trial=True)
PAID = BillingPeriod(TRIAL.end, TRIAL.end + dt.timedelta(days=30), False)


def test_usage_of_a_closed_trial_is_recorded_not_carried() -> None:
    for absolute in (False, True):
        p = plan(
            unit(2, 7, absolute=absolute),
            Mark(1, Decimal(5)),
            closed=True,
            target=PAID,
            now=NOW,
            trial=True,
        )
        assert p is not None
        assert (p.status, p.note, p.carried_from, p.event_time) == ("late", TRIAL_USAGE, None, T0)
        assert p.mark.version == 2  # accounted for: never planned again


def test_usage_of_an_open_trial_is_sent_as_any() -> None:
    p = plan(unit(1, 7), None, closed=False, target=None, now=NOW, trial=True)
    assert p is not None
    assert (p.status, p.value, p.carried_from) == ("pending", 7, None)


def test_a_trial_period_is_never_where_late_usage_goes() -> None:
    open_trial = BillingPeriod(NOW - dt.timedelta(hours=1), NOW + dt.timedelta(days=6), False, True)
    ended = BillingPeriod(NOW - dt.timedelta(days=30), open_trial.start, True)
    assert open_target([ended, open_trial], NOW, GRACE) is None  # waits for a paid period
    assert open_target([TRIAL, PAID], NOW, GRACE) == PAID
