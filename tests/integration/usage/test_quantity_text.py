"""One rule writes every quantity of the usage answer (docs/api.md, "Usage and projected
invoice"): at most 12 decimal places, so an item and the invoice line that bills it show the
same text, and a run-rate projection is not written to 28 significant digits in one place and
6 decimal places in another."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import asyncpg
from redis.asyncio import Redis

from meter.config import Settings

from .conftest import HOUR, Client, calls, drain, get, post_events, seed_plan

QUANTITY = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]{0,11}[1-9])?")


def quantities(doc: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every `quantity` (and `elapsed_fraction`) anywhere in the answer, with where it is."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("quantity", "elapsed_fraction") and value is not None:
                yield f"{path}.{key}", value
            else:
                yield from quantities(value, f"{path}.{key}")
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from quantities(value, f"{path}[{i}]")


def lines_of(invoice: dict[str, Any], item: str) -> list[dict[str, Any]]:
    return [line for line in invoice["lines"] if line["subscription_item"] == item]


async def test_items_and_invoice_lines_write_quantities_alike(
    client: Client, api_key: str, db: asyncpg.Connection, redis: Redis, settings: Settings
) -> None:
    await seed_plan(db)
    recent = int(time.time()) - 2 * HOUR
    await post_events(client, api_key, calls("c-1", "a", [40, 60, 50], recent))
    # A measured quantity with a fraction: exact as long as it is within the 12 places.
    fraction = {"id": "f", "customer": "c-1", "meter": "calls", "value": 1.25e-10}
    await post_events(client, api_key, [fraction | {"timestamp": recent}])
    assert await drain(settings, redis) == 4

    status, doc = await get(client, api_key, "/v1/customers/c-1/usage")
    assert status == 200, doc
    written = list(quantities(doc))
    assert [(where, q) for where, q in written if not QUANTITY.fullmatch(q)] == []
    [metered] = [i for i in doc["items"] if i["subscription_item"] == "si_m_c-1"]
    assert metered["quantity"] == "150.000000000125"
    projected = metered["projection"]["quantity"]
    # The run rate divides by the elapsed part of the period: not a terminating decimal.
    assert Decimal(projected) > Decimal(metered["quantity"])
    # Written to 12 places, trailing zeros dropped (the last places may be zeros).
    assert 6 <= len(projected.partition(".")[2]) <= 12, projected
    [now_line] = lines_of(doc["invoice"], "si_m_c-1")
    [projected_line] = lines_of(doc["projected_invoice"], "si_m_c-1")
    assert now_line["quantity"] == metered["quantity"]
    assert projected_line["quantity"] == projected
    # Amounts are priced from the exact quantities, unrounded: an integer of minor units.
    assert projected_line["amount"] == metered["projection"]["amount"]
    assert isinstance(projected_line["amount"], int)
    for item in doc["items"]:
        [line] = lines_of(doc["projected_invoice"], item["subscription_item"])
        assert line["quantity"] == item["projection"]["quantity"], item["subscription_item"]
