"""Usage no invoice will charge: of a period whose invoice was voided (once closed), and of an
item whose Stripe customer was deleted (open or closed). Recorded `late`, never carried."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from reporter.periods import BillingPeriod
from reporter.plan import CUSTOMER_DELETED_USAGE, VOIDED_USAGE, Mark, plan

from .test_rules import NOW, T0, unit

OPEN = BillingPeriod(NOW - dt.timedelta(hours=1), NOW + dt.timedelta(days=1), False)


def test_usage_of_a_voided_period_is_recorded_not_carried() -> None:
    for absolute in (False, True):
        p = plan(
            unit(2, 7, absolute=absolute),
            Mark(1, Decimal(5)),
            closed=True,
            target=OPEN,
            now=NOW,
            voided=True,
        )
        assert p is not None
        assert (p.status, p.note, p.carried_from, p.event_time) == ("late", VOIDED_USAGE, None, T0)
        assert p.mark.version == 2  # accounted for: never planned again


def test_usage_of_a_deleted_customer_is_recorded_even_while_its_period_is_open() -> None:
    for closed in (False, True):
        p = plan(unit(1, 7), None, closed=closed, target=OPEN, now=NOW, customer_deleted=True)
        assert p is not None
        assert (p.status, p.note, p.carried_from) == ("late", CUSTOMER_DELETED_USAGE, None)


def test_other_usage_is_sent_or_carried_as_before() -> None:
    sent = plan(unit(1, 7), None, closed=False, target=None, now=NOW)
    carried = plan(unit(1, 7), None, closed=True, target=OPEN, now=NOW)
    assert sent is not None
    assert carried is not None
    assert (sent.status, sent.carried_from) == ("pending", None)
    assert (carried.status, carried.carried_from) == ("pending", T0)
