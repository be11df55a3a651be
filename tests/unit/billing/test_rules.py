"""Pure billing rules: order safety, churn, dunning schedule, access, plan metadata, MRR."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meter.billing import mrr
from meter.billing.api import idempotency_key
from meter.billing.prices import price_from_row
from meter.billing.rules import (
    Access,
    Order,
    access_for,
    dunning_due_steps,
    is_churn,
    order_decision,
    plan_from_metadata,
)
from meter.pricing import Period, line_amount, round_minor

DAY = 86400
SCHEDULE = (0.0, 3 * DAY, 6 * DAY)


@pytest.mark.parametrize(
    ("stored", "event", "expected"),
    [
        (None, 5, Order.APPLY),
        (4, 5, Order.APPLY),
        (5, 4, Order.SKIP),
        (5, 5, Order.REFETCH),
    ],
)
def test_order_decision(stored: int | None, event: int, expected: Order) -> None:
    assert order_decision(stored, event) is expected


@given(st.lists(st.tuples(st.integers(0, 5), st.integers()), min_size=1, max_size=8))
def test_any_delivery_order_ends_at_the_newest_state(events: list[tuple[int, int]]) -> None:
    """Simulate the store: a tie refetches the truth (the newest event's state). Every order
    of delivery must end with the truth."""
    newest = max(c for c, _ in events)
    truth = next(s for c, s in reversed(events) if c == newest)
    for order in itertools.islice(itertools.permutations(events), 50):
        stored: tuple[int, int] | None = None
        for created, state in order:
            decision = order_decision(None if stored is None else stored[0], created)
            if decision is Order.APPLY:
                stored = (created, state)
            elif decision is Order.REFETCH:
                stored = (created, truth)
        # One newest event carries the truth; several tied ones end in a refetch of it.
        assert stored == (newest, truth)


def test_churn_only_from_live_to_ended() -> None:
    assert is_churn("active", "canceled")
    assert is_churn("past_due", "canceled")
    assert not is_churn("canceled", "canceled")
    assert not is_churn(None, "canceled")  # first sight of an old cancellation: not new churn
    assert not is_churn("active", "past_due")


def test_dunning_steps_are_due_in_order_and_once() -> None:
    failed = 1_000_000
    assert dunning_due_steps(failed, 0, SCHEDULE, failed - 1) == []
    assert dunning_due_steps(failed, 0, SCHEDULE, failed) == [0]
    assert dunning_due_steps(failed, 1, SCHEDULE, failed + 3 * DAY - 1) == []
    # A scheduler that was down owes every missed step.
    assert dunning_due_steps(failed, 1, SCHEDULE, failed + 10 * DAY) == [1, 2]
    assert dunning_due_steps(failed, 3, SCHEDULE, failed + 10 * DAY) == []


@pytest.mark.parametrize(
    ("status", "now", "restricted", "access", "reason"),
    [
        ("active", 0, False, Access.ALLOWED, "active"),
        ("trialing", 0, False, Access.ALLOWED, "trialing"),
        ("past_due", 100 + 7 * DAY - 1, False, Access.ALLOWED, "past_due_grace"),
        ("past_due", 100 + 7 * DAY, False, Access.RESTRICTED, "past_due_grace_expired"),
        ("past_due", 200, True, Access.RESTRICTED, "past_due_grace_expired"),
        ("canceled", 0, False, Access.RESTRICTED, "canceled"),
        ("unpaid", 0, False, Access.RESTRICTED, "unpaid"),
        ("incomplete", 0, False, Access.RESTRICTED, "incomplete"),
        (None, 0, False, Access.RESTRICTED, "no_subscription"),
    ],
)
def test_access(
    status: str | None, now: int, restricted: bool, access: Access, reason: str
) -> None:
    decision = access_for(status, failed_at=100, restricted=restricted, grace_s=7 * DAY, now=now)
    assert (decision.access, decision.reason) == (access, reason)


def test_past_due_without_a_recorded_failure_gets_a_full_grace() -> None:
    decision = access_for("past_due", failed_at=None, restricted=False, grace_s=60, now=1000)
    assert (decision.access, decision.grace_until) == (Access.ALLOWED, 1060)


def test_plan_metadata_price_overrides_product() -> None:
    plan = plan_from_metadata(
        {"features": "sso, export", "limit.calls": "1000", "limit.seats": "x"},
        {"features": "audit,sso", "limit.calls": "5000"},
    )
    assert plan.features == ("sso", "export", "audit")
    assert plan.limits == {"calls": Decimal(5000)}


def _row(**fields: object) -> dict[str, object]:
    """A stored `prices` row, as MRR_ITEMS reads it."""
    base: dict[str, object] = {
        "price": "price_1",
        "currency": "usd",
        "billing_scheme": "per_unit",
        "unit_amount": None,
        "unit_amount_decimal": None,
        "tiers_mode": None,
        "tiers": None,
        "transform_quantity": None,
        "recurring_interval": "month",
        "recurring_interval_count": 1,
        "usage_type": "licensed",
    }
    return {**base, **fields}


_TIERS = (
    '[{"up_to": 1000, "unit_amount": 0, "flat_amount": 500},'
    ' {"up_to": null, "unit_amount_decimal": "0.5"}]'
)
_PACKAGE = '{"divide_by": 1000, "round": "up"}'


@pytest.mark.parametrize(
    ("row", "quantity", "expected"),
    [
        pytest.param(_row(unit_amount=2000), 3, 6000, id="per-unit"),
        pytest.param(_row(unit_amount=1000, transform_quantity=_PACKAGE), 1001, 2000, id="package"),
        pytest.param(
            _row(billing_scheme="tiered", tiers_mode="graduated", tiers=_TIERS),
            1500,
            750,
            id="graduated",
        ),
        pytest.param(
            _row(billing_scheme="tiered", tiers_mode="graduated", tiers=_TIERS),
            0,
            500,
            id="graduated-base-fee",
        ),
        pytest.param(
            _row(billing_scheme="tiered", tiers_mode="volume", tiers=_TIERS), 1500, 750, id="volume"
        ),
        pytest.param(
            _row(billing_scheme="tiered", tiers_mode="volume", tiers=_TIERS),
            10,
            500,
            id="volume-first-tier",
        ),
    ],
)
def test_mrr_of_a_monthly_price_is_the_engines_line_amount(
    row: dict[str, object], quantity: int, expected: int
) -> None:
    price = price_from_row(row)
    assert line_amount(price, Decimal(quantity)) == expected  # hand-computed from the tiers
    assert round_minor(mrr.licensed(price, Decimal(quantity))) == expected
    # Half of a 30-day period gone, half the usage: the full-period amount.
    half = mrr.metered(price, Decimal(quantity) / 2, Period(0, 2_592_000), 1_296_000)
    assert round_minor(half) == expected


def test_mrr_normalises_intervals_to_a_month() -> None:
    year = price_from_row(_row(unit_amount=12000, recurring_interval="year"))
    assert mrr.licensed(year, Decimal(1)) == 1000
    quarter = price_from_row(_row(unit_amount=3000, recurring_interval_count=3))
    assert mrr.licensed(quarter, Decimal(1)) == 1000


def test_idempotency_keys_are_stable_and_short() -> None:
    assert idempotency_key("cancel", "sub_1", "now", 5) == "meter:cancel:sub_1:now:5"
    long = idempotency_key("checkout", "x" * 300)
    assert long == idempotency_key("checkout", "x" * 300)
    assert len(long) < 100


def test_mrr_of_usage_voided_below_zero_is_zero() -> None:
    # Stripe bills a negative cycle as 0 usage; the gauge counts it so, instead of dropping it.
    price = price_from_row(_row(unit_amount=10, usage_type="metered"))
    assert mrr.metered(price, Decimal(-5), Period(0, 100), 50) == 0
