"""The bare baseline for benchmarks: aiohttp + orjson, no I/O. POST /v1/events parses the body
and answers 202; GET /v1/customers/{id}/usage answers a fixed JSON body."""

from __future__ import annotations

import argparse

import orjson
import uvloop
from aiohttp import web


async def events(request: web.Request) -> web.Response:
    # The body is read as meter reads it (meter/bodies.py): at EOF, without `request.read()`,
    # which costs ~13 µs more a request in aiohttp 3.14; the ratio then shows meter's own work.
    content = request.content
    doc = orjson.loads(content.read_nowait() if content.is_eof() else await request.read())
    n = len(doc) if isinstance(doc, list) else 1
    return web.Response(
        status=202, body=orjson.dumps({"accepted": n}), content_type="application/json"
    )


# The GET baseline answers a body of the usage response's size, built from a fixed document.
_USAGE = orjson.dumps(
    {"items": [{"meter": f"m{i}", "quantity": "1", "amount": 1} for i in range(40)]}
)


async def usage(request: web.Request) -> web.Response:
    return web.Response(body=_USAGE, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/v1/events", events)
    app.router.add_get("/v1/customers/{id}/usage", usage)
    # reuse_port: several baseline processes share the port, like `meter serve --workers`.
    web.run_app(
        app,
        reuse_port=True,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
