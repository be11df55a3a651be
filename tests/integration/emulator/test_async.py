"""The async SDK (`*_async`), the in-loop `running_emulator` helper, persistence and the CLI."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest
import stripe

from meter.stripe_emulator import EmulatorConfig
from meter.stripe_emulator.cli import add_parser, config_from_args
from meter.stripe_emulator.server import ClientPool, running_emulator


async def test_async_sdk_against_threaded_emulator(apool: ClientPool) -> None:
    client = apool.client()
    meter = await client.v1.billing.meters.create_async(
        {"display_name": "c", "event_name": "calls", "default_aggregation": {"formula": "count"}}
    )
    customer = await client.v1.customers.create_async({"email": "a@example.com"})
    session = await client.v2.billing.meter_event_session.create_async()
    streamer = apool.client(api_key=session.authentication_token)
    events = [
        {
            "event_name": "calls",
            "identifier": f"a{i}",
            "payload": {"stripe_customer_id": customer.id},
        }
        for i in range(4)
    ]
    await streamer.v2.billing.meter_event_stream.create_async({"events": events})
    now = int(time.time())
    start = now - now % 60 - 3600
    summaries = await client.v1.billing.meters.event_summaries.list_async(
        meter.id, {"customer": customer.id, "start_time": start, "end_time": start + 7200}
    )
    assert summaries.data[0].aggregated_value == 4
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.customers.retrieve_async("cus_missing")


async def test_running_emulator_in_loop_and_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "stripe.json"
    config = EmulatorConfig(port=0, meter_events_port=0, state_file=state_file)
    async with running_emulator(config) as emu:
        client = emu.client()
        customer = await client.v1.customers.create_async({"email": "keep@example.com"})
    assert state_file.exists()
    async with running_emulator(config) as emu:
        again = await emu.client().v1.customers.retrieve_async(customer.id)
        assert again.email == "keep@example.com"


def test_cli_parser() -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "stripe-emulator",
            "--port",
            "1",
            "--meter-events-port",
            "2",
            "--webhook-url",
            "http://x/hook",
            "--webhook-secret",
            "whsec_1",
            "--state-file",
            "s.json",
        ]
    )
    config = config_from_args(args)
    assert (config.port, config.meter_events_port) == (1, 2)
    assert config.webhook_secret == "whsec_1"
    assert config.state_file == Path("s.json")
    with pytest.raises(SystemExit):
        config_from_args(parser.parse_args(["stripe-emulator", "--webhook-url", "http://x"]))
