"""Pages of a list answer, as Stripe's lists: `limit` (1..100) and `starting_after` an id."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from meter.errors import InvalidRequest

MAX_LIMIT: Final = 100


def limit_of(request: web.Request, default: int, maximum: int = MAX_LIMIT) -> int:
    """The `limit` query parameter; a clear 400 unless an integer from 1 to `maximum`."""
    raw = request.query.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:  # not an integer, or more digits than int() takes
        value = 0
    if not 1 <= value <= maximum:
        raise InvalidRequest(f"`limit` is an integer from 1 to {maximum}", param="limit")
    return value


def limit_parameter(default: int) -> dict[str, Any]:
    """`limit` in an OpenAPI operation's parameters."""
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": default},
    }


def starting_after_parameter(what: str) -> dict[str, Any]:
    """`starting_after` in an OpenAPI operation's parameters."""
    return {
        "name": "starting_after",
        "in": "query",
        "required": False,
        "description": f"{what} id: the page after it",
        "schema": {"type": "string"},
    }
