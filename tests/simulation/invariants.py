"""The simulation's invariants as comparisons of plain data; each returns its violations as text.

1. Every finalized invoice's metered lines (quantity and amount, to the cent), subtotal,
   discount, tax and total equal the model's (`bill_diff` at each period close).
2. Nothing is sent into a finalized period (`sent_into_finalized`); nothing accepted is missing
   from Stripe (`delta_totals`: per customer and delta meter, what Stripe holds equals what the
   model billed; absolute meters are covered by 1 and 3).
3. For the open period, our projected invoice (`GET /v1/customers/{id}/usage`) == the model ==
   the emulator's preview (`invoices.create_preview`) (`bill_diff`, twice).
4. No outbox row is stuck in `review`/`failed` (`stuck_rows`): every fault the simulation
   injects is transient, so a stuck row is a defect; it must at least be named in the
   reporter's log (its documented way out: README, "Reporting to Stripe").
Plus the ingest contract: a valid event is in (accepted or duplicate), an invalid one rejected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tests.simulation.model import Invoice

ZERO = Decimal(0)


@dataclass(frozen=True)
class Bill:
    """An invoice reduced to what the invariants compare: per meter (quantity, amount)."""

    lines: dict[str, tuple[Decimal, int]]
    subtotal: int
    discount: int
    tax: int
    tax_included: int
    total: int


def from_model(invoice: Invoice) -> Bill:
    lines: dict[str, tuple[Decimal, int]] = {}
    for line in invoice.lines:  # a meter's lines add up, as on the invoices (`_lines`)
        q, a = lines.get(line.meter, (ZERO, 0))
        lines[line.meter] = (q + (ZERO if line.fixed else line.quantity), a + line.amount)
    return Bill(
        lines,
        invoice.subtotal,
        invoice.discount,
        invoice.tax,
        invoice.tax_included,
        invoice.total,
    )


def _lines(
    rows: Iterable[tuple[str | None, Any, Any]], meter_of: Mapping[str, str]
) -> dict[str, tuple[Decimal, int]]:
    """Per meter (found by price, or by subscription item for an invoice item), the lines'
    quantities and amounts added up. An invoice item's line (quantity None here) counts by its
    amount only: its quantity is Stripe's usage in one form and meter's 1 in another."""
    out: dict[str, tuple[Decimal, int]] = {}
    for price, quantity, amount in rows:
        meter = meter_of.get(price or "", f"price {price}")
        q, a = out.get(meter, (ZERO, 0))
        out[meter] = (q + Decimal(str(quantity or 0)), a + int(amount))
    return out


def from_usage_doc(doc: Mapping[str, Any], meter_of: Mapping[str, str]) -> Bill:
    """Our projection: the `invoice` of `GET /v1/customers/{id}/usage`."""
    inv = doc["invoice"]
    rows = [
        (ln.get("subscription_item"), None, ln["amount"])
        if ln.get("kind") == "pending"
        else (ln.get("price"), ln.get("quantity"), ln["amount"])
        for ln in inv["lines"]
    ]
    return Bill(
        _lines(rows, meter_of),
        inv["subtotal"],
        inv["discount"],
        inv["tax"],
        inv["tax_included"],
        inv["total"],
    )


def from_stripe_invoice(inv: Mapping[str, Any], meter_of: Mapping[str, str]) -> Bill:
    """A Stripe invoice or preview (as a dict)."""
    rows = []
    for ln in inv["lines"]["data"]:
        price = ((ln.get("pricing") or {}).get("price_details") or {}).get("price")
        details = (ln.get("parent") or {}).get("subscription_item_details") or {}
        # An invoice item (a flexible price change's usage, a proration) counts by its amount.
        fixed = details.get("invoice_item") or details.get("proration")
        rows.append((price, None if fixed else ln.get("quantity"), ln["amount"]))
    taxes = inv.get("total_taxes") or []
    exclusive = sum(t["amount"] for t in taxes if t["tax_behavior"] == "exclusive")
    inclusive = sum(t["amount"] for t in taxes if t["tax_behavior"] == "inclusive")
    discount = sum(d["amount"] for d in inv.get("total_discount_amounts") or [])
    return Bill(
        _lines(rows, meter_of), inv["subtotal"], discount, exclusive, inclusive, inv["total"]
    )


def bill_diff(expected: Bill, actual: Bill, what: str) -> list[str]:
    """Where `actual` differs from `expected` (lines missing on either side count as zero)."""
    out = []
    for meter in sorted(set(expected.lines) | set(actual.lines)):
        e = expected.lines.get(meter, (ZERO, 0))
        a = actual.lines.get(meter, (ZERO, 0))
        if e[0] != a[0] or e[1] != a[1]:
            out.append(f"{what}: {meter} quantity/amount {a[0]}/{a[1]}, model {e[0]}/{e[1]}")
    for name in ("subtotal", "discount", "tax", "tax_included", "total"):
        e_v, a_v = getattr(expected, name), getattr(actual, name)
        if e_v != a_v:
            out.append(f"{what}: {name} {a_v}, model {e_v}")
    return out


def sent_into_finalized(
    events: Iterable[Mapping[str, Any]],
    finalized_at: Mapping[str, Mapping[tuple[int, int], int]],
) -> list[str]:
    """Meter events that reached Stripe, timestamped inside a period, once that period's
    invoice was final (`created` is the customer's clock time at arrival)."""
    out = []
    for e in events:
        for (start, end), at in finalized_at.get(e["customer"], {}).items():
            if start <= e["timestamp"] < end and e["created"] >= at:
                out.append(
                    f"{e['customer']} {e['event_name']} value {e['value']} at {e['timestamp']} "
                    f"sent at {e['created']} into the period [{start}, {end}) finalized at {at}"
                    f" (identifier {e['identifier']})"
                )
    return out


def delta_totals(
    stripe: Mapping[tuple[str, str], Decimal], model: Mapping[tuple[str, str], Decimal]
) -> list[str]:
    out = []
    for key in sorted(set(stripe) | set(model)):
        s, m = stripe.get(key, ZERO), model.get(key, ZERO)
        if s != m:
            out.append(f"{key[0]} {key[1]}: Stripe holds {s}, the model billed {m}")
    return out


def stuck_rows(rows: Iterable[Mapping[str, Any]], reporter_log: str) -> list[str]:
    out = []
    for r in rows:
        logged = "logged" if r["identifier"] in reporter_log else "NOT in the reporter's log"
        out.append(
            f"outbox row {r['identifier']} ({r['tenant']}/{r['customer']} {r['meter']} "
            f"{r['value']} at {r['event_time']}, carried_from {r['carried_from']}) is "
            f"{r['status']}: {r['last_error']} — {logged}"
        )
    return out
