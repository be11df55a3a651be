"""A subscription's trial, cancellation and paused collection in the projected invoice."""

from __future__ import annotations

from decimal import Decimal

from meter.pricing import (
    Period,
    in_trial,
    paused_invoice_status,
    project_invoice,
    renews_after,
)

from .test_invoice import ITEMS, NEXT, PERIOD, USAGE


def test_a_period_is_in_the_trial_only_when_the_trial_covers_it() -> None:
    assert in_trial(PERIOD, PERIOD.start, PERIOD.end)
    assert in_trial(PERIOD, PERIOD.start - 10, PERIOD.end + 10)
    assert not in_trial(NEXT, PERIOD.start, PERIOD.end)  # the first paid period
    assert not in_trial(PERIOD, None, None)
    assert not in_trial(PERIOD, PERIOD.start, None)


def test_the_subscription_renews_unless_it_ends_with_the_period() -> None:
    current_end = PERIOD.end
    assert renews_after(PERIOD, False, None, current_end)
    assert not renews_after(PERIOD, True, None, current_end)
    assert not renews_after(PERIOD, False, PERIOD.end, current_end)
    assert not renews_after(PERIOD, False, PERIOD.end - 1, current_end)
    assert renews_after(PERIOD, False, PERIOD.end + 1, current_end)
    # The period before the current one did renew (into the current one).
    before = Period(PERIOD.start - 100, PERIOD.start)
    assert renews_after(before, True, None, current_end)


def test_paused_collection_gives_stripes_invoice_status() -> None:
    assert paused_invoice_status(None) is None
    assert paused_invoice_status("keep_as_draft") == "draft"
    assert paused_invoice_status("mark_uncollectible") == "uncollectible"
    assert paused_invoice_status("void") == "void"
    assert paused_invoice_status("something_new") is None
    # Collection resumes at `resumes_at`: an invoice created from then on is collected.
    assert paused_invoice_status("void", 100, 99) == "void"
    assert paused_invoice_status("void", 100, 100) is None


def test_usage_of_a_trial_keeps_its_quantity_at_amount_zero() -> None:
    invoice = project_invoice(
        ITEMS, USAGE, period=PERIOD, licensed_period=NEXT, usage_charged=False
    )
    # The first paid period's fee in advance (2 × 2000), the trial's usage charged 0.
    assert [(line.kind, line.quantity, line.amount) for line in invoice.lines] == [
        ("metered", Decimal(1500), 0),
        ("licensed", Decimal(2), 4000),
    ]
    assert invoice.total == 4000


def test_a_subscription_ending_with_the_period_bills_no_fee_in_advance() -> None:
    invoice = project_invoice(ITEMS, USAGE, period=PERIOD, licensed_period=NEXT, renews=False)
    assert [(line.kind, line.amount) for line in invoice.lines] == [("metered", 750)]
    assert invoice.total == 750
