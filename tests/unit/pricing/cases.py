"""Hand-computed pricing cases, shared by the unit tests (engine) and the integration tests
(engine vs the Stripe emulator's invoice preview).

Each case is the `POST /v1/prices` params (minus `product`), a quantity, and the line amount in
minor units worked out by hand; the arithmetic is in the comment beside it. Where a Stripe doc
gives the example, the doc is named.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Case:
    name: str
    params: dict[str, Any]
    quantity: Decimal
    expected: int

    @property
    def metered(self) -> bool:
        return bool(self.params.get("recurring", {}).get("usage_type") == "metered")


METERED = {"interval": "month", "usage_type": "metered"}
LICENSED = {"interval": "month", "usage_type": "licensed"}

GRADUATED_TIERS = [
    {"up_to": 1000, "unit_amount": 0, "flat_amount": 500},
    {"up_to": 10000, "unit_amount_decimal": "0.5"},
    {"up_to": "inf", "unit_amount_decimal": "0.25", "flat_amount": 100},
]
# Stripe's tiered-pricing doc (Typographic): 1-5 fonts 7 USD, 6-10 6.50 USD, 11+ 6 USD.
TYPOGRAPHIC = [
    {"up_to": 5, "unit_amount": 700},
    {"up_to": 10, "unit_amount": 650},
    {"up_to": "inf", "unit_amount": 600},
]
VOLUME_FLAT = [
    {"up_to": 100, "unit_amount": 10},
    {"up_to": 1000, "unit_amount": 8, "flat_amount": 200},
    {"up_to": "inf", "unit_amount": 5},
]


def _per_unit(amount: str, currency: str = "usd", recurring: dict[str, str] = METERED) -> Any:
    return {"currency": currency, "unit_amount_decimal": amount, "recurring": recurring}


def _tiered(mode: str, tiers: Any, currency: str = "usd") -> Any:
    return {
        "currency": currency,
        "billing_scheme": "tiered",
        "tiers_mode": mode,
        "tiers": tiers,
        "recurring": METERED,
    }


def _package(amount: int, divide_by: int, rounding: str) -> Any:
    return {
        "currency": "usd",
        "unit_amount": amount,
        "transform_quantity": {"divide_by": divide_by, "round": rounding},
        "recurring": METERED,
    }


D = Decimal
CASES = [
    # -- per unit --------------------------------------------------------------------------------
    Case("licensed_seats", _per_unit("2000", recurring=LICENSED), D(3), 6000),  # 3 × 2000
    # decimal-amounts doc: 0.05 × 30 = 1.5 → rounded up to 2 cents.
    Case("decimal_half_rounds_up", _per_unit("0.05"), D(30), 2),
    Case("decimal_below_half_rounds_down", _per_unit("0.05"), D(29), 1),  # 1.45 → 1
    Case("decimal_exact", _per_unit("0.125"), D(1000), 125),  # 0.125 × 1000 = 125
    Case("decimal_quantity", _per_unit("33.3"), D("2.5"), 83),  # 33.3 × 2.5 = 83.25 → 83
    Case("zero_usage_per_unit", _per_unit("7"), D(0), 0),  # 0 × 7
    # -- graduated -------------------------------------------------------------------------------
    Case("graduated_zero_base_fee", _tiered("graduated", GRADUATED_TIERS), D(0), 500),  # flat 500
    Case(
        "graduated_at_boundary", _tiered("graduated", GRADUATED_TIERS), D(1000), 500
    ),  # 1000×0+500
    # 500 + 1 × 0.5 = 500.5 → 501
    Case("graduated_one_over", _tiered("graduated", GRADUATED_TIERS), D(1001), 501),
    # 500 + 9000 × 0.5 = 5000: the inf tier (and its flat 100) is not entered at exactly 10000
    Case("graduated_at_second_boundary", _tiered("graduated", GRADUATED_TIERS), D(10000), 5000),
    # 500 + 9000 × 0.5 + 2000 × 0.25 + 100 = 500 + 4500 + 500 + 100
    Case("graduated_into_inf", _tiered("graduated", GRADUATED_TIERS), D(12000), 5600),
    Case("graduated_doc_6", _tiered("graduated", TYPOGRAPHIC), D(6), 4150),  # 5×700 + 1×650
    # 5×700 + 5×650 + 10×600 = 3500 + 3250 + 6000
    Case("graduated_doc_20", _tiered("graduated", TYPOGRAPHIC), D(20), 12750),
    # -- volume ----------------------------------------------------------------------------------
    Case("volume_doc_5", _tiered("volume", TYPOGRAPHIC), D(5), 3500),  # doc: 5 × 7 USD = 35 USD
    Case("volume_doc_6", _tiered("volume", TYPOGRAPHIC), D(6), 3900),  # doc: 6 × 6.5 USD = 39 USD
    Case("volume_doc_25", _tiered("volume", TYPOGRAPHIC), D(25), 15000),  # doc: 25 × 6 = 150 USD
    Case("volume_flat_of_reached_tier", _tiered("volume", VOLUME_FLAT), D(101), 1008),  # 101×8+200
    Case("volume_top_tier", _tiered("volume", VOLUME_FLAT), D(1001), 5005),  # 1001 × 5
    # -- packages (transform_quantity) -----------------------------------------------------------
    # transform-quantities doc: 10 USD/hour, 150 minutes → ceil(150/60) = 3 hours → 30 USD.
    Case("package_doc_car_rental", _package(1000, 60, "up"), D(150), 3000),
    # quantity-transformation doc: 10 USD per 5 users, 6 users → ceil(6/5) = 2 → 20 USD.
    Case("package_doc_users", _package(1000, 5, "up"), D(6), 2000),
    Case("package_round_down", _package(1000, 1000, "down"), D(1999), 1000),  # floor(1.999) × 1000
    Case("package_zero", _package(1000, 1000, "up"), D(0), 0),  # ceil(0) = 0 packages
    # -- zero-decimal currencies: amounts are whole yen / won --------------------------------------
    Case("jpy_per_unit", _per_unit("150", currency="jpy"), D(7), 1050),  # 7 × ¥150
    Case("jpy_decimal", _per_unit("0.5", currency="jpy"), D(3), 2),  # 1.5 yen → ¥2
    Case(  # all 11 units at the second tier: 11 × ₩900
        "krw_volume",
        _tiered(
            "volume",
            [{"up_to": 10, "unit_amount": 1000}, {"up_to": "inf", "unit_amount": 900}],
            "krw",
        ),
        D(11),
        9900,
    ),
]
