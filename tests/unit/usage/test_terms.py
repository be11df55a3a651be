"""The terms of a period's invoice from the subscription's state: a trial covers the periods
inside it; cancellation and paused collection apply to the current period's invoice only (those
of earlier periods were created before)."""

from __future__ import annotations

import dataclasses

from meter.pricing import Period
from meter.usage.report import Terms, terms_of
from meter.usage.store import Plan

from .test_usage_pure import _item

CURRENT = Period(100, 200)
PREVIOUS = Period(0, 100)
PLAN = Plan(
    external_id="c-1",
    stripe_id="cus_1",
    subscription="sub_1",
    status="active",
    items=(dataclasses.replace(_item("calls"), current=CURRENT),),
)


def test_an_active_subscription_bills_as_usual() -> None:
    assert terms_of(PLAN, CURRENT) == Terms()
    assert terms_of(PLAN, PREVIOUS) == Terms()


def test_a_trial_covers_its_periods_only() -> None:
    plan = dataclasses.replace(PLAN, trial_start=0, trial_end=100)
    assert not terms_of(plan, PREVIOUS).usage_charged
    assert terms_of(plan, CURRENT).usage_charged


def test_cancel_at_period_end_ends_after_the_current_period_only() -> None:
    plan = dataclasses.replace(PLAN, cancel_at_period_end=True)
    assert not terms_of(plan, CURRENT).renews
    assert terms_of(plan, PREVIOUS).renews
    assert not terms_of(dataclasses.replace(PLAN, cancel_at=150), CURRENT).renews
    assert terms_of(dataclasses.replace(PLAN, cancel_at=250), CURRENT).renews


def test_paused_collection_applies_to_the_current_periods_invoice() -> None:
    plan = dataclasses.replace(PLAN, pause_behavior="void")
    assert terms_of(plan, CURRENT).paused_status == "void"
    assert terms_of(plan, PREVIOUS) == Terms()
    resumed = dataclasses.replace(plan, pause_resumes_at=CURRENT.end)
    assert terms_of(resumed, CURRENT).paused_status is None
