"""Request bodies in their Content-Encoding, decoded here rather than by aiohttp's parser.

aiohttp's own decoding (turned off in meter/app.py) answers a body that is not in its declared
encoding with a plain-text 400 written outside our error middleware, or an exception in the
handler, each logged at error level with a traceback. Here it is a client error like any other:
400 naming the encoding, 415 for an encoding we do not take, 413 past the size limit once
decoded (a small gzip bomb stays small), and nothing is read into memory beyond that limit.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from aiohttp import web

from meter.errors import InvalidRequest, MeteringError, PayloadTooLarge

# gzip with its header (16 + window), deflate as HTTP means it: a zlib stream (RFC 9110 8.4.1.2).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class UnsupportedEncoding(MeteringError):
    status = 415
    type = "invalid_request_error"


def decode(raw: bytes, encoding: str, max_bytes: int) -> bytes:
    """`raw` decoded from `encoding` ("" or identity: as it is), at most `max_bytes` of it."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return raw
    wbits = _WBITS.get(name)
    if wbits is None:
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding[:40]!r} is not supported: send gzip, deflate or none",
            param="Content-Encoding",
        )
    out = bytearray()
    rest = raw
    try:
        while rest:  # gzip may hold several members back to back
            decompressor = zlib.decompressobj(wbits)
            out += decompressor.decompress(rest, max_bytes + 1 - len(out))
            if len(out) > max_bytes:
                raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes once decoded")
            if not decompressor.eof:
                raise zlib.error("the stream ends early")
            rest = decompressor.unused_data if wbits != zlib.MAX_WBITS else b""
    except zlib.error as exc:
        raise InvalidRequest(
            f"the body is not {name} as its Content-Encoding header says ({exc}): send it so "
            "encoded, or without that header",
            param="Content-Encoding",
        ) from None
    return bytes(out)


async def read_body(request: web.Request) -> bytes:
    """The request's body, decoded; the limit is the app's `client_max_size` both ways."""
    content = request.content
    limit = request.client_max_size
    if content.is_eof():
        # Optimisation: the whole body is already buffered (a small request arrives in one
        # read), so it is taken as it is; `request.read()` costs ~13 µs more a request in
        # aiohttp 3.14 (docs/performance.md).
        raw = content.read_nowait()
        if len(raw) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(raw))
    else:
        raw = await request.read()  # aiohttp refuses more than client_max_size bytes (413)
    return decode(raw, request.headers.get("Content-Encoding", ""), limit)


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object, or the 400 saying why it is not."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("the body must be a JSON object")
    return doc
