"""How meter writes its JSON answers (`response`), and the numbers a 64-bit integer cannot hold.

Every route that answers a document goes through `response`: compact JSON, `application/json`,
the same bytes for the same document whichever area serves it. (The ingest endpoint writes its
fixed-shape answer itself, on the hot path; errors are written by meter/app.py the same way.)

Amounts are integers in the currency's minor unit. One outside the signed 64-bit range (Stripe's
own bound for amounts: such an amount can never be invoiced) is written as a decimal string of
the exact integer instead, so that an answer never fails to encode. Only run-rate projections of
huge usage early in a period get there.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def wide_ints_as_strings(value: Any) -> Any:
    """`value` with every integer outside the signed 64-bit range turned into its decimal text."""
    if isinstance(value, dict):
        return {k: wide_ints_as_strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [wide_ints_as_strings(v) for v in value]
    wide = isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX  # bools are in range
    return str(value) if wide else value


def dumps(doc: Any) -> bytes:
    """orjson's bytes of `doc`, integers outside the signed 64-bit range as decimal strings.
    (orjson alone would write 2^63..2^64-1 as numbers and fail past them.)"""
    return orjson.dumps(wide_ints_as_strings(doc))


def response(doc: Any, status: int = 200) -> web.Response:
    """`doc` as meter's JSON answer."""
    return web.Response(status=status, body=dumps(doc), content_type="application/json")
