"""A fault-injecting proxy in front of the real server: it makes responses get lost after the
server committed, which no setting of the server itself can do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

# What the proxy does with one request:
#   pass    forward and relay the answer
#   lost    forward (the server commits), then answer 503: the client never sees the result
#   reset   forward, then drop the connection without an answer
#   hang    forward, then never answer (the client's request timeout fires)
#   refuse  answer 503 without forwarding (nothing committed)
ACTIONS = ("pass", "lost", "reset", "hang", "refuse")

MakeProxy = Callable[[str], Awaitable["Proxy"]]


@dataclass
class Proxy:
    upstream: str
    script: list[str] = field(default_factory=list)  # actions for the next requests, in order
    default: str = "pass"
    bodies: list[bytes] = field(default_factory=list)  # every request body, in arrival order
    answers: list[dict[str, object]] = field(default_factory=list)  # upstream's JSON answers
    url: str = ""
    _session: aiohttp.ClientSession | None = None
    _never: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.bodies.append(body)
        action = self.script.pop(0) if self.script else self.default
        assert action in ACTIONS, action
        if action == "refuse":
            return web.json_response(
                {"error": {"type": "unavailable", "message": "refused", "param": None}},
                status=503,
                headers={"Retry-After": "1"},
            )
        assert self._session is not None
        async with self._session.post(
            self.upstream + request.path, data=body, headers=dict(request.headers)
        ) as upstream:
            raw = await upstream.read()
            if upstream.status == 200:
                self.answers.append(await upstream.json())
            answer = web.Response(status=upstream.status, body=raw, headers=upstream.headers)
        if action == "lost":
            return web.json_response({"error": {"type": "api_error"}}, status=503)
        if action == "reset":
            assert request.transport is not None
            request.transport.close()
        if action in ("reset", "hang"):
            await self._never.wait()
        return answer

    def statuses_of_answers(self) -> list[list[str]]:
        return [[str(r["status"]) for r in a["results"]] for a in self.answers]  # type: ignore[index, union-attr]


@pytest.fixture
async def make_proxy() -> AsyncIterator[MakeProxy]:
    servers: list[tuple[TestServer, Proxy]] = []

    async def start(upstream: str) -> Proxy:
        proxy = Proxy(upstream.rstrip("/"))
        proxy._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        server = TestServer(app)
        await server.start_server()
        proxy.url = str(server.make_url(""))
        servers.append((server, proxy))
        return proxy

    yield start
    for server, proxy in servers:
        await server.close()
        assert proxy._session is not None
        await proxy._session.close()


def base_url(client: TestClient[object, object]) -> str:
    return str(client.make_url(""))
