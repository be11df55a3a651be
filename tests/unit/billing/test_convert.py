"""Stripe wire objects → rows."""

from __future__ import annotations

import datetime as dt

from meter.billing import convert


def test_subscription_rows_take_the_period_from_items() -> None:
    sub = {
        "id": "sub_1",
        "customer": {"id": "cus_1"},
        "status": "active",
        "created": 10,
        "items": {
            "data": [
                {
                    "id": "si_1",
                    "price": {
                        "id": "price_1",
                        "product": "prod_1",
                        "recurring": {"meter": "mtr_1", "usage_type": "metered"},
                    },
                    "quantity": None,
                    "current_period_start": 100,
                    "current_period_end": 200,
                }
            ]
        },
        "pause_collection": {"behavior": "void", "resumes_at": 300},
        "latest_invoice": {"id": "in_1"},
    }
    row = convert.subscription_row(sub)
    assert row[1] == "cus_1"
    assert row[4] == dt.datetime.fromtimestamp(100, dt.UTC)
    assert row[12:14] == ("void", dt.datetime.fromtimestamp(300, dt.UTC))
    assert row[14] == "in_1"
    assert convert.item_rows(sub)[0][:6] == ("si_1", "sub_1", "price_1", "prod_1", None, "mtr_1")


def test_invoice_subscription_from_parent() -> None:
    inv = {
        "id": "in_1",
        "customer": "cus_1",
        "parent": {"subscription_details": {"subscription": "sub_9"}},
        "status": "open",
        "currency": "usd",
        "created": 5,
    }
    assert convert.invoice_subscription(inv) == "sub_9"
    assert convert.customer_link({"metadata": {"meter_customer": "a", "meter_tenant": "t"}}) == (
        "a",
        "t",
    )


def test_the_invoice_items_an_invoice_took_from_its_lines() -> None:
    def line(parent: dict[str, object]) -> dict[str, object]:
        return {
            "amount": 120,
            "currency": "usd",
            "period": {"start": 1, "end": 2},
            "parent": parent,
        }

    inv = {
        "id": "in_1",
        "customer": "cus_1",
        "parent": {"subscription_details": {"subscription": "sub_1"}},
        "lines": {
            "data": [
                line({"invoice_item_details": {"invoice_item": "ii_a", "proration": False}}),
                line(
                    {
                        "subscription_item_details": {
                            "invoice_item": "ii_b",
                            "proration": True,
                            "subscription_item": "si_1",
                        }
                    }
                ),
                line({"subscription_item_details": {"invoice_item": None, "proration": False}}),
            ]
        },
    }
    rows = convert.invoice_item_lines(inv)
    assert [(r[0], r[2], r[3], r[6], r[9]) for r in rows] == [
        ("ii_a", "sub_1", None, False, "in_1"),
        ("ii_b", "sub_1", "si_1", True, "in_1"),
    ]


def test_items_keep_their_place_in_the_subscription() -> None:
    # An invoice's lines follow the subscription's items (the last cent of a discount share too).
    sub = {
        "id": "sub_1",
        "items": {
            "data": [
                {"id": "si_b", "price": {"id": "p1"}, "current_period_start": 1,
                 "current_period_end": 2},
                {"id": "si_a", "price": {"id": "p2"}, "current_period_start": 1,
                 "current_period_end": 2},
            ]
        },
    }  # fmt: skip
    assert [(r[0], r[-1]) for r in convert.item_rows(sub)] == [("si_b", 0), ("si_a", 1)]
