"""One Stripe emulator (own thread, so the synchronous SDK can call it) for the pricing tests,
reset before each test, and an SDK client closed after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from meter.stripe_emulator import EmulatorConfig
from meter.stripe_emulator.server import ClientPool, EmulatorThread, RunningEmulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[EmulatorThread, RunningEmulator]]:
    thread = EmulatorThread(EmulatorConfig(port=0, meter_events_port=0))
    with thread as running:
        yield thread, running


@pytest.fixture
def client(emulator: tuple[EmulatorThread, RunningEmulator]) -> Iterator[stripe.StripeClient]:
    thread, running = emulator
    thread.call(running.emu.reset)
    pool = ClientPool(running.api_base, running.meter_events_base)
    yield pool.client()
    pool.close()
