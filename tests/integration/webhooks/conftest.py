"""A local webhook receiver, a movable clock and an endpoint for the notifier's tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import orjson
import pytest
from aiohttp import web

from meter.config import Settings
from meter.webhooks import store


@dataclass
class Received:
    body: bytes
    signature: str

    @property
    def event(self) -> dict[str, object]:
        doc: dict[str, object] = orjson.loads(self.body)
        return doc


@dataclass
class Receiver:
    """Answers `answers` in turn (then `status`), after `delay` s; keeps every request."""

    url: str = ""
    status: int = 200
    answers: list[int] = field(default_factory=list)
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            body = await request.read()
            self.received.append(Received(body, request.headers.get("Meter-Signature", "")))
            if self.delay:
                await asyncio.sleep(self.delay)
            status = self.answers.pop(0) if self.answers else self.status
            return web.Response(status=status, text="ok")
        finally:
            self.in_flight -= 1

    def ids(self) -> list[object]:
        return [r.event["id"] for r in self.received]


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPFound("/hook")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    app.router.add_post("/moved", moved)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    r.url = f"http://127.0.0.1:{port}/hook"
    yield r
    await runner.cleanup()


def closed_port_url() -> str:
    """A URL nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def nsettings(settings: Settings) -> Settings:
    """Fast retries: backoff of at most 1 s of the (moved) clock."""
    return settings.replace(
        notifier_backoff_base_s=0.5,
        notifier_backoff_cap_s=1.0,
        notifier_timeout_s=2.0,
        notifier_retry_for_s=3600.0,
        notifier_disable_after_s=600.0,
        notifier_disable_min_failures=3,
    )


@dataclass(frozen=True)
class Endpoint:
    id: str
    secret: str


async def add_endpoint(
    db: asyncpg.Connection,
    url: str,
    now: dt.datetime,
    tenant: str = "acme",
    types: tuple[str, ...] = ("*",),
) -> Endpoint:
    row, secret = await store.create(db, tenant, url, list(types), now)
    return Endpoint(row["id"], secret)
