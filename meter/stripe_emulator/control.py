"""`/_emulator/…`: the test-only control API (JSON in and out, no auth, never in Stripe).

Faults, the request log, reset, clocks, payment outcomes, meter totals, checkout completion and
the webhook delivery log. Both surfaces mount it, so faults can be set from either port.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from meter.stripe_emulator import meter_math, meters
from meter.stripe_emulator.core import EMULATOR, Emulator
from meter.stripe_emulator.faults import FaultRule
from meter.stripe_emulator.wire import Obj, invalid, json_response

ControlHandler = Callable[[Emulator, Obj, web.Request], Awaitable[Any]]
PREFIX = "/_emulator"


def register(app: web.Application) -> None:
    table: list[tuple[str, str, ControlHandler]] = [
        ("GET", "/health", health),
        ("POST", "/reset", reset),
        ("GET", "/faults", list_faults),
        ("POST", "/faults", add_fault),
        ("DELETE", "/faults", clear_faults),
        ("GET", "/requests", list_requests),
        ("DELETE", "/requests", clear_requests),
        ("POST", "/sessions/expire", expire_sessions),
        ("GET", "/meter_events", list_meter_events),
        ("GET", "/meters/{id}/totals", meter_totals),
        ("POST", "/clock/advance", advance_clock),
        ("POST", "/payments", set_payment_outcome),
        ("GET", "/webhooks/deliveries", list_deliveries),
        ("GET", "/events", list_events),
    ]
    for method, path, fn in table:
        app.router.add_route(method, PREFIX + path, _wrap(fn))


def extra(app: web.Application, method: str, path: str, fn: ControlHandler) -> None:
    """Resource modules add their own control endpoints (checkout completion, ...)."""
    app.router.add_route(method, PREFIX + path, _wrap(fn))


def _wrap(fn: ControlHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        body: Obj = {}
        if request.can_read_body:
            raw = await request.read()
            if raw:
                try:
                    parsed = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise invalid("Control API bodies are JSON.") from None
                if not isinstance(parsed, dict):
                    raise invalid("Control API bodies are JSON objects.")
                body = parsed
        body = {**dict(request.query), **body}
        return json_response(await fn(request.app[EMULATOR], body, request))

    return handle


async def health(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    return {"ok": True, "api_version": emu.config.api_version}


async def reset(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    emu.reset()
    return {"reset": True}


async def list_faults(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    return {"data": [r.to_json() for r in emu.faults.rules]}


async def add_fault(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    if "seed" in body:
        emu.faults.seed(int(body["seed"]))
    return emu.faults.add(FaultRule.from_params(body)).to_json()


async def clear_faults(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    emu.faults.clear()
    return {"data": []}


async def list_requests(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    log = emu.state.request_log
    if pattern := body.get("path"):
        log = [e for e in log if fnmatch.fnmatchcase(e["path"], str(pattern))]
    return {"data": log}


async def clear_requests(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    emu.state.request_log.clear()
    return {"data": []}


async def expire_sessions(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    # Expire rather than forget, so the next stream call sees `temporary_session_expired`.
    past = time.time() - 1
    for token in emu.state.sessions:
        emu.state.sessions[token] = past
    return {"expired": len(emu.state.sessions)}


async def list_meter_events(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    from dataclasses import asdict

    return {
        "data": [asdict(e) for e in emu.state.meter_events],
        "rejected": emu.state.rejected_meter_events,
    }


async def meter_totals(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    """Per-customer aggregate of a meter over [start, end) (default: everything)."""
    meter = emu.state.get("billing.meter", request.match_info["id"])
    start = int(body.get("start", 0))
    end = int(body.get("end", 2**40))
    formula = meter["default_aggregation"]["formula"]
    customers = sorted({e.customer for e in emu.state.meter_events if e.meter == meter["id"]})
    totals: dict[str, int | float] = {}
    for customer in customers:
        pts = [p for p in meters.points(emu.state, meter, customer) if start <= p.timestamp < end]
        totals[customer] = meter_math.as_number(meter_math.aggregate(formula, pts))
    return {"meter": meter["id"], "formula": formula, "totals": totals}


async def advance_clock(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    """Move the emulator's real-time clock forward; billing catches up at once."""
    from meter.stripe_emulator import billing_cycle

    seconds = Decimal(str(body.get("seconds", 0)))
    if seconds < 0:
        raise invalid("The clock only moves forward.", "seconds")
    emu.state.clock_offset += float(seconds)
    billing_cycle.run_due(emu, clock_id=None)
    return {"now": emu.state.now()}


async def set_payment_outcome(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    outcome = body.get("outcome")
    if outcome not in ("succeed", "fail"):
        raise invalid("outcome must be succeed or fail", "outcome")
    emu.state.payment_outcomes[str(body.get("customer") or "*")] = outcome
    return {"payment_outcomes": emu.state.payment_outcomes}


async def list_deliveries(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    return {"data": emu.deliveries}


async def list_events(emu: Emulator, body: Obj, request: web.Request) -> Obj:
    events = emu.state.all("event")
    if type_ := body.get("type"):
        events = [e for e in events if fnmatch.fnmatchcase(e["type"], str(type_))]
    return {"data": events}
