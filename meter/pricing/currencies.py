"""Currencies and their minor units, as Stripe counts them.

Every amount in meter (and in Stripe's API) is an integer in the currency's *minor unit*: cents
for USD, but the yen itself for JPY, because JPY has no subunit. The pricing engine therefore never
converts: a price's `unit_amount_decimal` is already in the minor unit, and line amounts are
rounded to whole minor units whatever the currency. This module is for presenting amounts
(`to_major`) and for the few currencies whose charge amounts Stripe constrains further.

Source: https://docs.stripe.com/currencies ("Zero-decimal currencies", "Three-decimal
currencies", "Special cases").
"""

from __future__ import annotations

from decimal import Decimal

from meter.pricing.errors import PricingError

# "Zero-decimal currencies": amounts are passed as the whole amount, 500 JPY is `amount=500`.
ZERO_DECIMAL: frozenset[str] = frozenset(
    {
        "bif",  # Burundian franc
        "clp",  # Chilean peso
        "djf",  # Djiboutian franc
        "gnf",  # Guinean franc
        "jpy",  # Japanese yen
        "kmf",  # Comorian franc
        "krw",  # South Korean won
        "mga",  # Malagasy ariary
        "pyg",  # Paraguayan guaraní
        "rwf",  # Rwandan franc
        "ugx",  # Ugandan shilling
        "vnd",  # Vietnamese đồng
        "vuv",  # Vanuatu vatu
        "xaf",  # Central African CFA franc
        "xof",  # West African CFA franc
        "xpf",  # CFP franc
    }
)

# "Three-decimal currencies": 5.124 KWD is `amount=5124`; Stripe requires charge amounts in these
# to end in 0 (a multiple of 10 minor units).
THREE_DECIMAL: frozenset[str] = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})

# "Special cases": ISK is zero-decimal in reality but Stripe's API keeps it two-decimal for
# backwards compatibility (amounts must be divisible by 100); HUF and TWD are two-decimal in the
# API but paid out in whole units; UGX is listed both as zero-decimal and among these special
# cases. Invoice line math is unaffected: lines are still rounded to one minor unit of the API
# representation; only what can be charged or paid out is constrained.
WHOLE_UNIT_CHARGES: frozenset[str] = frozenset({"isk", "huf", "twd", "ugx"})


def normalize(currency: str) -> str:
    """Stripe's currency codes are lowercase ISO 4217."""
    code = currency.strip().lower()
    if len(code) != 3 or not code.isalpha():
        raise PricingError(f"Not an ISO 4217 currency code: {currency!r}", param="currency")
    return code


def exponent(currency: str) -> int:
    """How many decimal places the currency's minor unit has in Stripe's API (0, 2 or 3)."""
    code = normalize(currency)
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def is_zero_decimal(currency: str) -> bool:
    return normalize(currency) in ZERO_DECIMAL


def to_major(amount: int, currency: str) -> Decimal:
    """An integer minor-unit amount as a decimal in the major unit (1999 USD → 19.99)."""
    return Decimal(amount).scaleb(-exponent(currency))
