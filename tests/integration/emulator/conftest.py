"""A live Stripe emulator for the whole session (own thread, so sync SDK calls don't block it),
reset before each test, plus SDK clients that are closed after each test."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import requests
import stripe
from aiohttp import web

from meter.stripe_emulator import EmulatorConfig
from meter.stripe_emulator.server import ClientPool, EmulatorThread, RunningEmulator

CONFIG = EmulatorConfig(
    port=0,
    meter_events_port=0,
    webhook_retry_base=0.02,
    webhook_max_attempts=4,
    tick_seconds=0.1,
    fault_seed=1,
)


@dataclass
class Receiver:
    """A webhook receiver in the emulator's loop; answers `statuses` in turn, then 200."""

    url: str = ""
    received: list[tuple[bytes, str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), request.headers["Stripe-Signature"]))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    def events(self, secret: str) -> list[stripe.Event]:
        """Every delivery, verified and parsed by the SDK exactly as a real handler would."""
        return [stripe.Webhook.construct_event(body, sig, secret) for body, sig in self.received]


@dataclass
class Env:
    thread: EmulatorThread
    running: RunningEmulator
    receiver: Receiver

    @property
    def emu(self) -> Any:
        return self.running.emu

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        with requests.Session() as session:
            response = session.request(
                method, self.running.api_base + "/_emulator" + path, data=orjson.dumps(body or {})
            )
            response.raise_for_status()
            return response.json()


@pytest.fixture(scope="session")
def emulator_env() -> Iterator[Env]:
    thread = EmulatorThread(CONFIG)
    with thread as running:
        receiver = Receiver()

        async def start_receiver() -> web.AppRunner:
            app = web.Application()
            app.router.add_post("/hook", receiver.handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            receiver.url = f"http://127.0.0.1:{port}/hook"
            return runner

        runner = thread.run(start_receiver())
        yield Env(thread, running, receiver)
        thread.run(runner.cleanup())


@pytest.fixture
def env(emulator_env: Env) -> Env:
    emulator_env.thread.call(emulator_env.running.emu.reset)
    emulator_env.receiver.received.clear()
    emulator_env.receiver.statuses.clear()
    return emulator_env


@pytest.fixture
def pool(env: Env) -> Iterator[ClientPool]:
    pool = ClientPool(env.running.api_base, env.running.meter_events_base)
    yield pool
    pool.close()


@pytest.fixture
def client(pool: ClientPool) -> stripe.StripeClient:
    return pool.client()


@pytest.fixture
async def apool(env: Env) -> AsyncIterator[ClientPool]:
    pool = ClientPool(env.running.api_base, env.running.meter_events_base)
    yield pool
    await pool.aclose()


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll until `predicate()` holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)
