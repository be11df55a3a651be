"""The simulation's reference model, checked by hand against Stripe's documented examples."""

from __future__ import annotations

from decimal import Decimal as D

from tests.simulation.model import (
    Account,
    Coupon,
    Line,
    Price,
    Tax,
    Tier,
    Usage,
    billed_in,
    discount_shares,
    invoice,
    quantity,
)

TIERS = (Tier(D(5), D(500)), Tier(D(10), D(400)), Tier(None, D(300), 1000))


def test_prices() -> None:
    # Graduated (Stripe's example shape): 5 × 5.00 + 5 × 4.00 + 2 × 3.00 + 10.00 flat = 61.00.
    assert Price("graduated", tiers=TIERS).amount(D(12)) == 6100
    # Volume: all 12 units at the third tier, plus its flat fee; `up_to` is inclusive.
    assert Price("volume", tiers=TIERS).amount(D(12)) == 12 * 300 + 1000
    assert Price("volume", tiers=TIERS).amount(D(5)) == 5 * 500
    # Packages of 10 at 2.50, rounded up or down.
    assert Price("package", unit=D(250), package_size=10).amount(D(21)) == 750
    assert Price("package", unit=D(250), package_size=10, package_round="down").amount(D(21)) == 500
    # One rounding per line, halves up: 2.5 × 3.3 = 8.25 → 8; 4.5 × 3.3 = 14.85 → 15.
    assert Price("per_unit", unit=D("3.3")).amount(D("2.5")) == 8
    assert Price("per_unit", unit=D("0.75")).amount(D(2)) == 2  # 1.5 → 2


def test_quantities() -> None:
    usage = [
        Usage("a", D(5), 10.0, "u1"),
        Usage("b", D(7), 5.0, "u2"),
        Usage("c", D(3), 20.0, "u1"),
    ]
    assert quantity("sum", usage) == 15
    assert quantity("max", usage) == 7
    assert quantity("last", usage) == 3  # the latest timestamp, not the latest arrival
    assert quantity("unique_count", usage) == 2
    # A negative cycle total (voids) is invoiced as zero.
    assert quantity("sum", [Usage("v", D(-4), 1.0)]) == 0


def test_where_usage_is_billed() -> None:
    assert billed_in("sum", own_period=1, own_finalized=False, open_period=2) == 1
    assert billed_in("count", own_period=1, own_finalized=True, open_period=2) == 2
    assert billed_in("max", own_period=1, own_finalized=True, open_period=2) is None


def test_discount_and_tax() -> None:
    # 10 off 300 + 100 + 0: shares 7.5 / 2.5 → floors 7 / 2, the remaining cent to the larger
    # fraction (equal: the first line).
    assert discount_shares([300, 100, 0], 10) == [8, 2, 0]
    lines = [Line("a", D(1), 300), Line("b", D(1), 100)]
    exclusive = invoice(lines, Coupon("forever", percent_off=D(10)), Tax(D(19), False))
    assert (exclusive.discount, exclusive.tax) == (40, round(270 * 0.19) + round(90 * 0.19))
    assert exclusive.total == 400 - 40 + exclusive.tax
    inclusive = invoice(lines, None, Tax(D(20), True))
    assert (inclusive.tax_included, inclusive.total) == (50 + 17, 400)  # 300/6, 100/6 → 16.67


def test_a_once_coupon_is_used_by_the_first_invoice_with_a_subtotal() -> None:
    account = Account({"m": ("sum", Price("per_unit", unit=D(100)))}, Coupon("once", amount_off=50))
    assert account.invoice(0, finalize=True).discount == 0  # nothing to discount yet
    account.bill(1, "m", Usage("e", D(1), 0.0))
    account.bill(2, "m", Usage("f", D(1), 0.0))
    assert account.invoice(1, finalize=True).discount == 50
    assert account.invoice(2, finalize=False).discount == 0


def test_trial_usage_is_charged_nothing_and_its_late_usage_billed_nowhere() -> None:
    account = Account({"calls": ("sum", Price("per_unit", unit=D(2)))}, trial_periods=1)
    account.bill(0, "calls", Usage("e1", D(10), 1.0))
    account.bill(1, "calls", Usage("e2", D(3), 90000.0))
    assert [(ln.quantity, ln.amount) for ln in account.lines(0)] == [(D(10), 0)]
    assert account.invoice(1, finalize=True).total == 6
    assert billed_in("sum", 0, True, 1, own_trial=True) is None
    assert billed_in("sum", 0, False, 1, own_trial=True) == 0


def test_a_price_change_bills_the_old_window_by_billing_mode() -> None:
    for flexible, expected in ((True, 10 * 2 + 3 * 5), (False, 3 * 5)):
        account = Account({"calls": ("sum", Price("per_unit", unit=D(2)))})
        account.bill(0, "calls", Usage("e1", D(10), 1.0))
        account.change_price(0, "calls", Price("per_unit", unit=D(5)), flexible=flexible)
        account.bill(0, "calls", Usage("e2", D(3), 2.0))
        assert account.invoice(0, finalize=True).total == expected
        assert account.off_lines == [("calls", [Usage("e1", D(10), 1.0)])]


def test_a_meter_change_bills_the_old_meter_by_billing_mode_and_the_new_one_after() -> None:
    # Stripe docs, usage-based/manage-billing-setup, "Update prices mid-cycle": the price taken
    # off bills its usage so far as an invoice item (flexible) or nothing (classic).
    for flexible, expected in ((True, 10 * 2 + 3 * 5), (False, 3 * 5)):
        account = Account({"calls": ("sum", Price("per_unit", unit=D(2)))})
        account.bill(0, "calls", Usage("e1", D(10), 1.0))
        account.change_meter(0, "calls", "jobs", "sum", Price("per_unit", unit=D(5)),
                             flexible=flexible)  # fmt: skip
        account.bill(0, "jobs", Usage("e2", D(3), 2.0))
        assert account.invoice(0, finalize=True).total == expected
        account.bill(1, "jobs", Usage("e3", D(1), 90000.0))
        assert [ln.meter for ln in account.lines(1)] == ["jobs"]  # the old meter is gone
        assert account.invoice(1, finalize=True).total == 5


def test_items_added_and_removed_bill_their_own_periods() -> None:
    account = Account({"calls": ("sum", Price("per_unit", unit=D(2)))})
    account.add_item(1, "jobs", "sum", Price("per_unit", unit=D(7)))
    assert [ln.meter for ln in account.lines(0)] == ["calls"]
    assert [ln.meter for ln in account.lines(1)] == ["calls", "jobs"]
    account.bill(1, "calls", Usage("e1", D(4), 1.0))
    account.remove_item(1, "calls", flexible=True)  # its 4 calls: an invoice item at 2
    account.bill(1, "jobs", Usage("e2", D(1), 2.0))
    assert account.invoice(1, finalize=True).total == 4 * 2 + 7
    assert [ln.meter for ln in account.lines(2)] == ["jobs"]


def test_two_items_on_one_meter_each_bill_all_of_its_usage() -> None:
    account = Account({"calls": ("sum", Price("per_unit", unit=D(2)))},
                      twins={"calls": Price("per_unit", unit=D(5))})  # fmt: skip
    account.bill(0, "calls", Usage("e1", D(10), 1.0))
    assert [(ln.quantity, ln.amount) for ln in account.lines(0)] == [(D(10), 20), (D(10), 50)]


def test_a_second_item_added_on_a_billed_meter_bills_from_the_next_period() -> None:
    account = Account({"calls": ("sum", Price("per_unit", unit=D(2)))})
    account.bill(0, "calls", Usage("e1", D(10), 1.0))
    account.add_twin(0, "calls", Price("per_unit", unit=D(5)))  # none of period 0 after it
    account.bill(1, "calls", Usage("e2", D(3), 90000.0))
    assert [(ln.quantity, ln.amount) for ln in account.lines(0)] == [(D(10), 20), (D(0), 0)]
    assert [(ln.quantity, ln.amount) for ln in account.lines(1)] == [(D(3), 6), (D(3), 15)]


def test_prorated_quantity_change() -> None:
    # Stripe's example (billing/subscriptions/prorations): from 10 to 20 USD halfway through the
    # period is -5 USD for the unused time and +10 USD for the remaining time; here 1 → 2 seats
    # of 10 USD. The next period is billed in advance at the new quantity.
    account = Account({}, seats="seats", seat_unit=1000, seat_history=[(0, 1)])
    account.change_seats(0, 2, remaining=43200, length=86400, prorate=True)
    lines = account.lines(0)
    assert [(ln.quantity, ln.amount, ln.fixed) for ln in lines] == [
        (D(2), 2000, False),
        (D(1), -500, True),
        (D(2), 1000, True),
    ]
    assert account.invoice(0, finalize=True).total == 2500
    # `none`: no proration, only the new quantity from the next invoice on.
    account.change_seats(1, 3, remaining=100, length=86400, prorate=False)
    assert [(ln.quantity, ln.amount) for ln in account.lines(1)] == [(D(3), 3000)]
    assert account.seats_at_end(0) == 2


def test_a_mapped_dimension_value_is_billed_by_its_own_price_and_the_rest_by_the_meters() -> None:
    # docs/dimensions.md, "Pricing per dimension": usage of a mapped combination goes to its
    # Stripe meter (and price); other values, events without the key and `_other` to the
    # meter's own. A void follows its event.
    account = Account(
        {
            "tokens": ("sum", Price("per_unit", unit=D(1))),
            "tokens_large": ("sum", Price("per_unit", unit=D(10))),
        },
        mappings={"tokens": {"large": "tokens_large"}},
    )
    account.bill(0, "tokens", Usage("e1", D(5), 1.0, dimension="large"))
    account.bill(0, "tokens", Usage("e2", D(3), 2.0, dimension="small"))
    account.bill(0, "tokens", Usage("e3", D(2), 3.0))  # no model: `none`
    account.bill(0, "tokens", Usage("e4", D(7), 4.0, dimension="_other"))
    account.bill(0, "tokens", Usage("void:e1", D(-1), 1.0, dimension="large"))
    assert [(ln.meter, ln.quantity, ln.amount) for ln in account.lines(0)] == [
        ("tokens", D(12), 12),
        ("tokens_large", D(4), 40),
    ]
    assert account.invoice(0, finalize=True).total == 52
