"""The walk a product team takes, in one test, using only what the README and docs/ give them:
`meter dev`; in another terminal `meter stripe setup` of a catalogue of their own against the
dev's Stripe; the client installed alone in a fresh virtualenv sending usage; the projected
invoice priced; and `meter reconcile` finding what Stripe holds equal to what meter sent."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from meter.embedded import free_port
from tests.e2e.devproc import running_dev
from tests.e2e.test_cli import METER
from tests.e2e.test_dev import dev_env, poll
from tests.integration.client.test_distribution import ROOT, run_uv

# The shipped example with one price of the team's own added: 3 ¢ a call.
OWN_PRICE = {"nickname": "Scale", "currency": "usd", "meter": "api_calls", "unit_amount": 3}

CLIENT_SCRIPT = """
import sys
from meter_client import MeterClientSync

url, key = sys.argv[1], sys.argv[2]
with MeterClientSync(url, key) as client:
    for n in range(3):
        client.record(customer="demo-customer", meter="api_calls", value=500, id=f"walk-{n}")
    client.flush()
    stats = client.stats
print(stats.accepted, stats.rejected, stats.failed)
"""


async def _meter(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        METER, *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_from_make_dev_to_stripe_setup_the_client_and_the_cli(
    empty_database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    catalogue: dict[str, Any] = yaml.safe_load((ROOT / "deploy/catalogue.example.yaml").read_text())
    catalogue["products"]["api"]["prices"]["api_scale_monthly"] = OWN_PRICE
    mine = tmp_path / "my-catalogue.yaml"
    mine.write_text(yaml.safe_dump(catalogue))

    # The client from its own wheel, alone in a virtualenv of its own, built before the stack
    # starts (it needs none of it).
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    run_uv("build", "--package", "meter-client", "--wheel", "--out-dir", dist)
    [wheel] = dist.glob("meter_client-*.whl")
    run_uv("venv", "--quiet", "--python", sys.executable, venv)
    run_uv("pip", "install", "--quiet", "--python", venv / "bin" / "python", wheel)

    port = free_port()
    env = dev_env(empty_database_url, redis_url, redis_prefix)
    async with running_dev(env, tmp_path, port) as dev:
        # A second terminal: no METER_ or STRIPE_ variable, only .meter/dev/env in the folder.
        terminal = {k: v for k, v in os.environ.items() if not k.startswith(("METER_", "STRIPE_"))}
        webhook = f"http://127.0.0.1:{port}/stripe/webhook"
        code, out, err = await _meter(
            ["stripe", "setup", str(mine), "--webhook-url", webhook], terminal, tmp_path
        )
        assert code == 0, err
        # `meter dev` applied the example at its start; only the team's price and the new
        # endpoint and destination are made now.
        created = [line for line in out.splitlines() if "created" in line]
        assert any("api_scale_monthly" in line for line in created), out
        assert "whsec_" in out
        code, out, err = await _meter(
            ["stripe", "setup", str(mine), "--webhook-url", webhook], terminal, tmp_path
        )
        assert (code, "nothing changed" in out) == (0, True), out + err

        # The address and key as a script reads them from .meter/dev/env.
        url, key = dev.env_file["METER_URL"], dev.env_file["METER_API_KEY"]
        client = await asyncio.create_subprocess_exec(
            venv / "bin" / "python", "-c", CLIENT_SCRIPT, url, key, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        sent, problems = await asyncio.wait_for(client.communicate(), 60)
        assert client.returncode == 0, problems.decode()
        assert sent.decode().split() == ["3", "0", "0"], sent.decode()

        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:

            async def priced() -> dict[str, Any] | None:
                async with http.get(f"{url}/v1/customers/demo-customer/usage") as response:
                    if response.status != 200:
                        return None
                    doc: dict[str, Any] = await response.json()
                if doc["invoice"] is None or doc["items"][0]["quantity"] != "1500":
                    return None
                return doc

            usage = await poll(priced, "the client's usage in the projected invoice")
            # The demo price: $5 flat + 1,000 × 1 ¢ + 500 × 0.5 ¢.
            assert usage["invoice"]["total"] == 500 + 1000 + 250

        async def reconciled() -> str | None:
            code, out, _ = await _meter(["reconcile", "--days", "2"], terminal, tmp_path)
            return out if code == 0 and "compared 0 " not in out else None

        # Stripe's summaries equal what meter sent, once the reporter has sent it.
        out = await poll(reconciled, "usage reconciled with Stripe", attempts=60)
        assert out.rstrip().endswith("; 0 drift"), out
