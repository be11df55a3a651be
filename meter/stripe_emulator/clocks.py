"""Test clocks: customers created on a clock live at its frozen time; `advance` runs billing.

Stripe advances asynchronously (status `advancing`, then `ready`); the emulator does the work
inside the request, so the clock is already `ready` when `advance` answers.
"""

from __future__ import annotations

from meter.stripe_emulator import billing_cycle
from meter.stripe_emulator.core import Req, Route
from meter.stripe_emulator.resources import deleted
from meter.stripe_emulator.wire import Obj, int_param, invalid, new_id, paginate

BASE = "/v1/test_helpers/test_clocks"
KIND = "test_helpers.test_clock"


def routes() -> list[Route]:
    return [
        Route("POST", BASE, create),
        Route("GET", BASE, list_),
        Route("GET", BASE + "/{id}", retrieve),
        Route("DELETE", BASE + "/{id}", delete),
        Route("POST", BASE + "/{id}/advance", advance),
    ]


def create(req: Req) -> Obj:
    frozen = int_param(req.params, "frozen_time")
    now = req.state.now()
    clock: Obj = {
        "id": new_id("clock"),
        "object": KIND,
        "created": now,
        "deletes_after": now + 30 * 86400,
        "frozen_time": frozen,
        "livemode": False,
        "name": req.get("name"),
        "status": "ready",
        "status_details": {},
    }
    req.state.put(clock)
    req.emu.emit("test_helpers.test_clock.created", clock)
    return clock


def retrieve(req: Req) -> Obj:
    return req.state.get(KIND, req.match["id"])


def list_(req: Req) -> Obj:
    return paginate(req.state.all(KIND), req.params, BASE)


def delete(req: Req) -> Obj:
    clock = req.state.get(KIND, req.match["id"])
    req.state.delete(clock["id"])
    req.emu.emit("test_helpers.test_clock.deleted", clock)
    return deleted(clock)


def advance(req: Req) -> Obj:
    clock = req.state.get(KIND, req.match["id"])
    target = int_param(req.params, "frozen_time")
    if target <= clock["frozen_time"]:
        raise invalid(
            "The frozen_time must be after the test clock's current frozen_time.", "frozen_time"
        )
    req.emu.emit("test_helpers.test_clock.advancing", {**clock, "status": "advancing"})
    # Step period by period so each renewal happens at (and is stamped with) its own time.
    while True:
        next_boundary = _next_boundary(req, clock["id"], clock["frozen_time"], target)
        clock["frozen_time"] = next_boundary
        billing_cycle.run_due(req.emu, clock["id"])
        if next_boundary >= target:
            break
    req.emu.emit("test_helpers.test_clock.ready", clock)
    return clock


def _next_boundary(req: Req, clock_id: str, current: int, target: int) -> int:
    """The earliest period end, finalize time or trial warning on this clock after `current`."""
    candidates = [target]
    for sub in req.state.all("subscription"):
        cus = req.state.objects.get(sub["customer"]) or {}
        if cus.get("test_clock") != clock_id or sub["status"] == "canceled":
            continue
        candidates.append(sub["items"]["data"][0]["current_period_end"])
        if sub.get("trial_end"):
            candidates.append(sub["trial_end"] - billing_cycle.TRIAL_WILL_END_SECONDS)
    for invoice in req.state.all("invoice"):
        if invoice.get("_finalize_at"):
            candidates.append(invoice["_finalize_at"])
    return (
        min(c for c in candidates if c > current)
        if any(c > current for c in candidates)
        else target
    )
