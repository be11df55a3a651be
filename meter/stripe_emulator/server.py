"""Running the emulator: in the current loop (`running_emulator`) or in a thread (`EmulatorThread`).

Other test suites use these to get a live emulator and SDK clients pointed at it:

    async with running_emulator() as emu:
        client = emu.client()
        await client.v1.customers.create_async({"email": "a@example.com"})

Synchronous SDK calls block the calling loop, so tests that use them run the emulator in its own
thread with `EmulatorThread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import stripe
from aiohttp import web

from meter.stripe_emulator.app import create_app
from meter.stripe_emulator.core import Emulator, EmulatorConfig
from meter.stripe_emulator.state import State

T = TypeVar("T")
TEST_API_KEY = "sk_test_emulator"


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


@dataclass
class ClientPool:
    """SDK clients made for one emulator, so they can all be closed (no leaked sockets)."""

    api_base: str
    meter_events_base: str
    api_key: str = TEST_API_KEY
    _http: list[stripe.HTTPClient] = field(default_factory=list)

    def client(
        self, *, api_key: str | None = None, timeout: float = 10.0, max_network_retries: int = 0
    ) -> stripe.StripeClient:
        """A StripeClient (sync and `*_async`) pointed at this emulator."""
        async_http = stripe.AIOHTTPClient(timeout=timeout)
        http = stripe.RequestsClient(timeout=timeout, async_fallback_client=async_http)
        self._http.extend([http, async_http])
        return stripe.StripeClient(
            api_key or self.api_key,
            base_addresses={"api": self.api_base, "meter_events": self.meter_events_base},
            http_client=http,
            max_network_retries=max_network_retries,
        )

    def close(self) -> None:
        for http in self._http:
            if isinstance(http, stripe.RequestsClient):
                http.close()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        """Close sync sessions and the async ones opened in the current loop."""
        self.close()
        for http in self._http:
            if isinstance(http, stripe.AIOHTTPClient) and http._cached_session is not None:
                await http.close_async()
        self._http.clear()


class RunningEmulator(ClientPool):
    """A started emulator: its bases, a test key, its `Emulator` and a client factory."""

    def __init__(self, emu: Emulator, api_base: str, meter_events_base: str) -> None:
        super().__init__(api_base=api_base, meter_events_base=meter_events_base)
        self.emu = emu


@contextlib.asynccontextmanager
async def running_emulator(
    config: EmulatorConfig | None = None, state: State | None = None
) -> AsyncIterator[RunningEmulator]:
    """Serve both surfaces in this loop on free ports (or the configured ones) until exit."""
    config = config or EmulatorConfig(port=0, meter_events_port=0)
    emu = Emulator(config=config, state=state or _initial_state(config))
    emu.faults.seed(config.fault_seed) if config.fault_seed is not None else None
    runners: list[web.AppRunner] = []
    bases: list[str] = []
    try:
        for surface, port in (("api", config.port), ("meter_events", config.meter_events_port)):
            runner = web.AppRunner(create_app(emu, surface), access_log=None, handle_signals=False)
            await runner.setup()
            runners.append(runner)
            sock = _bind(config.host, port)
            await web.SockSite(runner, sock).start()
            bases.append(f"http://{config.host}:{sock.getsockname()[1]}")
        running = RunningEmulator(emu, bases[0], bases[1])
        try:
            yield running
        finally:
            await running.aclose()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def _initial_state(config: EmulatorConfig) -> State:
    return State.load(config.state_file) if config.state_file else State()


class EmulatorThread:
    """The emulator in a daemon thread with its own loop, for synchronous SDK tests."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._running: RunningEmulator | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="stripe-emulator", daemon=True)

    def __enter__(self) -> RunningEmulator:
        self._thread.start()
        self._ready.wait()
        if self._error is not None or self._running is None:
            raise RuntimeError("stripe emulator failed to start") from self._error
        return self._running

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
        self._loop.close()

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the emulator's loop (state is only touched from there)."""

        async def run() -> T:
            return fn()

        return self.run(run())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with running_emulator(self._config) as running:
                self._running = running
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()


def with_ports(config: EmulatorConfig, port: int, meter_events_port: int) -> EmulatorConfig:
    return replace(config, port=port, meter_events_port=meter_events_port)
