"""`create_app(emulator, surface)`: the aiohttp app for one of the emulator's two hosts.

`api` is api.stripe.com (v1 and v2 except the stream), `meter_events` is meter-events.stripe.com
(the v2 meter event stream). One middleware does, in order: log, faults, auth, params,
idempotent replay, dispatch, Stripe headers — the order Stripe's edge applies them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from meter.stripe_emulator import control, routes
from meter.stripe_emulator.core import (
    API_KEY,
    EMULATOR,
    PARAMS,
    SURFACE,
    Emulator,
    Handler,
    Req,
    Route,
)
from meter.stripe_emulator.faults import FaultRule, fault_error
from meter.stripe_emulator.idempotency import fingerprint
from meter.stripe_emulator.wire import (
    Obj,
    StripeError,
    decode_form,
    error_response,
    expand,
    expand_paths,
    hide_includable,
    invalid,
    json_response,
    new_id,
    strip_private,
)

log = logging.getLogger(__name__)

AioHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(emu: Emulator, surface: str = "api") -> web.Application:
    """The app for `surface` ("api" or "meter_events"); background work runs with "api"."""
    app = web.Application(middlewares=[stripe_middleware], client_max_size=4 * 1024**2)
    app[EMULATOR] = emu
    app[SURFACE] = surface
    table = routes.meter_events_routes() if surface == "meter_events" else routes.api_routes()
    _register(app, table)
    control.register(app)
    routes.register_control(app)
    if surface == "api":
        app.cleanup_ctx.extend(routes.background_tasks())
    return app


def _register(app: web.Application, table: Iterable[Route]) -> None:
    for route in table:
        app.router.add_route(route.method, route.path, _adapt(route.handler))


def _adapt(fn: Handler) -> AioHandler:
    async def handle(request: web.Request) -> web.StreamResponse:
        emu = request.app[EMULATOR]
        params: Obj = request[PARAMS]
        obj = fn(Req(emu, params, request.match_info, request))
        if paths := expand_paths(params):
            in_list = obj.get("object") in ("list", "search_result")
            obj = expand(obj, paths, emu.state.find, in_list=in_list)
        return json_response(strip_private(hide_includable(obj, paths)))

    return handle


@web.middleware
async def stripe_middleware(request: web.Request, handler: AioHandler) -> web.StreamResponse:
    emu = request.app[EMULATOR]
    if request.path.startswith("/_emulator/"):
        try:
            return await handler(request)
        except StripeError as exc:
            return error_response(exc)
    request_id = new_id("req", 14)
    entry: Obj = {
        "id": request_id,
        "time": time.time(),
        "surface": request.app[SURFACE],
        "method": request.method,
        "path": request.path,
        "params": None,
        "idempotency_key": request.headers.get("Idempotency-Key"),
        "status": None,
        "outcome": "ok",
    }
    emu.state.request_log.append(entry)
    drop = False
    try:
        response, drop = await _serve(request, handler, emu, entry)
    except StripeError as exc:
        response = error_response(exc)
        if entry["outcome"] == "ok":
            entry["outcome"] = "error"
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(_unrecognized(request))
        entry["outcome"] = "error"
    except Exception:
        log.exception("emulator handler failed", extra={"path": request.path})
        response = error_response(StripeError(500, "Internal emulator error.", type_="api_error"))
        if not _faulted(entry):
            entry["outcome"] = "error"
    response.headers["Stripe-Version"] = (
        request.headers.get("Stripe-Version") or emu.config.api_version
    )
    response.headers["Request-Id"] = request_id
    entry["status"] = response.status
    if entry["outcome"] == "ok" and response.status >= 400:
        entry["outcome"] = "error"
    if drop:
        # The request was applied and its reply is known; the client just never gets it.
        entry["outcome"] = "dropped"
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError
    return response


async def _serve(
    request: web.Request, handler: AioHandler, emu: Emulator, entry: Obj
) -> tuple[web.StreamResponse, bool]:
    rule = emu.faults.pick(request.method, request.path)
    drop = False
    if rule is not None:
        drop = await _apply_fault(rule, request, entry)
    _authenticate(request, emu)
    params = await _params(request)
    request[PARAMS] = params
    entry["params"] = params
    key = request.headers.get("Idempotency-Key")
    if not key or request.method not in ("POST", "DELETE"):
        return await _run(request, handler), drop
    scope = request[API_KEY]
    fp = fingerprint(request.method, request.path, params)
    stored = emu.idempotency.begin(scope, key, fp, time.time())
    if stored is not None:
        if not _faulted(entry):
            entry["outcome"] = "replayed"
        replay = web.Response(
            status=stored.status, body=stored.body, content_type="application/json"
        )
        replay.headers["Idempotent-Replayed"] = "true"
        return replay, drop
    try:
        response = await _run(request, handler)
    except BaseException:
        emu.idempotency.abandon(scope, key)
        raise
    body = response.body if isinstance(response, web.Response) else b""
    stored_body = body if isinstance(body, bytes | bytearray) else b""
    # Only requests that ran to a result are kept, like Stripe (failed validation is not).
    status = response.status
    if 200 <= status < 300 or status == 402:
        emu.idempotency.finish(scope, key, fp, status, bytes(stored_body), time.time())
    else:
        emu.idempotency.abandon(scope, key)
    return response, drop


async def _run(request: web.Request, handler: AioHandler) -> web.StreamResponse:
    try:
        return await handler(request)
    except StripeError as exc:
        return error_response(exc)


def _faulted(entry: Obj) -> bool:
    """A fault fired on this request: its outcome is what the client saw (a timed-out client
    sees neither the replay nor the error of a body it stopped sending), so it stays."""
    return str(entry["outcome"]).startswith("fault:")


async def _apply_fault(rule: FaultRule, request: web.Request, entry: Obj) -> bool:
    entry["outcome"] = f"fault:{rule.mode}"
    if rule.mode in ("rate_limit", "error"):
        raise fault_error(rule, request.path.startswith("/v2/"))
    if rule.mode in ("latency", "timeout"):
        await asyncio.sleep(rule.delay)
        entry["outcome"] = "ok" if rule.mode == "latency" else "fault:timeout"
    return rule.mode == "drop"


def _authenticate(request: web.Request, emu: Emulator) -> None:
    key = _bearer(request)
    if request.app[SURFACE] == "meter_events":
        _check_session(key, emu)
    elif key is None:
        raise StripeError(
            401,
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details.",
        )
    elif not key.startswith(("sk_test_", "rk_test_")):
        raise StripeError(401, f"Invalid API Key provided: {key[:8]}{'*' * 8}")
    request[API_KEY] = key or ""


def _check_session(token: str | None, emu: Emulator) -> None:
    if token is None:
        raise StripeError(401, "You did not provide a meter event session token.")
    expires = emu.state.sessions.get(token)
    if expires is None:
        raise StripeError(401, "Invalid meter event session token provided.")
    if time.time() >= expires:
        raise StripeError(
            401,
            "The meter event session token has expired. Create a new meter event session.",
            type_="temporary_session_expired",
            code="billing_meter_event_session_expired",
        )


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:].strip() or None
    if header.startswith("Basic "):
        try:
            user = base64.b64decode(header[6:]).decode().split(":", 1)[0]
        except ValueError:
            return None
        return user or None
    return None


async def _params(request: web.Request) -> Obj:
    if request.method in ("GET", "DELETE") or not request.can_read_body:
        return decode_form(request.query.items())
    body = await request.read()
    if request.path.startswith("/v2/"):
        try:
            doc = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            raise invalid("The request body is not valid JSON.") from None
        if not isinstance(doc, dict):
            raise invalid("The request body must be a JSON object.")
        return doc
    return decode_form(parse_qsl(body.decode(), keep_blank_values=True))


def _unrecognized(request: web.Request) -> StripeError:
    return StripeError(
        404,
        f"Unrecognized request URL ({request.method}: {request.path}). Please see "
        "https://stripe.com/docs or we can help at https://support.stripe.com/.",
    )
