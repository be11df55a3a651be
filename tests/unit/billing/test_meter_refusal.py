"""Which Stripe meter formulas the reporter can report to (rules.meter_refusal)."""

from __future__ import annotations

import pytest

from meter.billing.rules import meter_refusal


@pytest.mark.parametrize("formula", ["sum", "last"])
def test_sum_and_last_meters_are_reportable(formula: str) -> None:
    assert meter_refusal("mtr_1", "calls", formula) is None


def test_a_count_meter_is_refused_naming_it_and_the_fix() -> None:
    message = meter_refusal("mtr_9", "requests", "count")
    assert message is not None
    assert "mtr_9" in message
    assert "'requests'" in message
    assert "formula 'sum'" in message
    assert "meter meters define requests --aggregation count" in message


@pytest.mark.parametrize("window", ["hour", "day"])
def test_a_pre_aggregated_meter_is_refused_whatever_its_formula(window: str) -> None:
    # Stripe keeps only the latest event of each window: meter's deltas would overwrite each
    # other (docs.stripe.com/billing/subscriptions/usage-based/recording-usage).
    message = meter_refusal("mtr_5", "calls", "sum", window)
    assert message is not None
    assert f"event_time_window {window!r}" in message
    assert "no event_time_window" in message
