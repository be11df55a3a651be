"""No secret in logs: a realistic run of `meter serve` at debug level — a key created with the
CLI, events ingested with it, billing calls to Stripe, signed and forged webhooks, failed
authentications — and its JSON logs on stderr hold none of the secrets, in any spelling."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from meter.config import Settings
from meter.embedded import free_port
from meter.stripe_emulator.server import running_emulator
from meter.stripe_emulator.webhooks import sign
from tests.integration.billing.conftest import EMULATOR, catalog

DEADLINE_S = 30.0


async def run_cli(env: dict[str, str], log: Path, *args: str) -> str:
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "meter",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0
    return out.decode()


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def wait_healthy(session: aiohttp.ClientSession, base: str, proc: Any, log: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        if proc.returncode is not None:
            pytest.fail(f"meter serve exited: {tail(log)}")
        try:
            async with session.get(f"{base}/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, tail(log)
        await asyncio.sleep(0.1)


def spellings(secret: str) -> set[str]:
    """The secret and what it could leak as: its tail, its sha256 in hex and base64."""
    digest = hashlib.sha256(secret.encode()).digest()
    # The last 16 characters, not the part after the last "_": an API key's random part is
    # urlsafe base64 and may hold "_" itself ("…_s" would make the "tail" the letter s, found
    # in every log: a flaky failure).
    return {
        secret,
        secret[-16:],
        digest.hex(),
        base64.b64encode(digest).decode(),
        base64.urlsafe_b64encode(digest).decode().rstrip("="),
    }


async def test_a_realistic_run_logs_no_secret(settings: Settings, tmp_path: Path) -> None:
    webhook_secret = "whsec_" + secrets.token_hex(16)
    stripe_key = "sk_test_" + secrets.token_hex(16)
    serve_log = tmp_path / "serve.log"
    cli_log = tmp_path / "cli.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with running_emulator(dataclasses.replace(EMULATOR)) as running:
        env = {
            **os.environ,
            "METER_DATABASE_URL": settings.database_url,
            "METER_REDIS_URL": settings.redis_url,
            "METER_REDIS_PREFIX": settings.redis_prefix,
            "METER_SHARDS": str(settings.shards),
            "METER_PORT": str(port),
            "METER_METRICS_PORT": "0",
            "METER_LOG_LEVEL": "debug",
            "METER_BILLING_TENANT": "acme",
            "STRIPE_API_KEY": stripe_key,
            "STRIPE_WEBHOOK_SECRET": webhook_secret,
            "STRIPE_API_BASE": running.api_base,
            "STRIPE_METER_EVENTS_BASE": running.meter_events_base,
        }
        api_key = (
            await run_cli(env, cli_log, "keys", "create", "logs", "--tenant", "acme")
        ).strip()
        revoked = (await run_cli(env, cli_log, "keys", "create", "old", "--tenant", "acme")).strip()
        listing = await run_cli(env, cli_log, "keys", "list")
        old_id = next(line.split("\t")[0] for line in listing.splitlines() if "\told\t" in line)
        await run_cli(env, cli_log, "keys", "revoke", old_id)

        with serve_log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "meter", "serve", env=env, stderr=err
            )
        try:
            async with aiohttp.ClientSession() as http:
                await wait_healthy(http, base, proc, serve_log)
                running.emu.config = dataclasses.replace(
                    running.emu.config,
                    webhook_url=f"{base}/stripe/webhook",
                    webhook_secret=webhook_secret,
                )
                auth = {"Authorization": f"Bearer {api_key}"}
                events = [{"id": f"e{i}", "customer": "cust-1", "meter": "calls"} for i in range(3)]
                async with http.post(f"{base}/v1/events", json=events, headers=auth) as r:
                    assert r.status == 200
                for bad in (revoked, api_key + "x", "mk_live_" + "A" * 43):
                    headers = {"Authorization": f"Bearer {bad}"}
                    async with http.post(f"{base}/v1/events", json=events, headers=headers) as r:
                        assert r.status == 401
                    async with http.get(
                        f"{base}/v1/customers/cust-1/subscription", headers=headers
                    ) as r:
                        assert r.status == 401
                # Billing: Stripe calls with the API key, and webhooks signed with the secret.
                sdk = running.client(api_key=stripe_key)
                cat = await catalog(sdk)
                await sdk.v1.customers.create_async(
                    {"metadata": {"meter_customer": "cust-1", "meter_tenant": "acme"}}
                )
                checkout = {"prices": [cat["basic"]], "success_url": "https://app.example/ok"}
                url = f"{base}/v1/customers/cust-2/checkout-session"
                async with http.post(url, json=checkout, headers=auth) as r:
                    assert r.status == 200, await r.text()
                url = f"{base}/v1/customers/cust-2/payment-method/setup-intent"
                async with http.post(url, headers=auth) as r:
                    assert r.status == 200, await r.text()
                    client_secret = (await r.json())["client_secret"]
                # A forged webhook and a replayed one.
                body = b'{"id":"evt_x","type":"customer.created","created":1}'
                for sig in ("t=1,v1=" + "0" * 64, sign(body.decode(), webhook_secret, 1)):
                    async with http.post(
                        f"{base}/stripe/webhook", data=body, headers={"Stripe-Signature": sig}
                    ) as r:
                        assert r.status == 400
                deadline = time.monotonic() + DEADLINE_S
                while not any(d["status"] == 200 for d in running.emu.deliveries):
                    assert time.monotonic() < deadline, running.emu.deliveries
                    await asyncio.sleep(0.05)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), timeout=10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()

    logs = serve_log.read_text() + cli_log.read_text()
    lines = [line for line in serve_log.read_text().splitlines() if line.strip()]
    not_json = [line for line in lines if not line.startswith("{")]
    assert not not_json, not_json[:5]  # every line is a JSON object
    records = [orjson.loads(line) for line in lines]
    messages = " ".join(str(r.get("msg")) for r in records)
    # The run really logged: start-up, the refused webhooks, the Stripe SDK at debug level.
    assert "meter serving" in messages
    assert "webhook refused" in messages
    assert any(r["logger"].startswith("stripe") for r in records), messages[:2000]
    leaked = {
        name: spelling
        for name, secret in {
            "api key": api_key,
            "revoked api key": revoked,
            "webhook secret": webhook_secret,
            "stripe api key": stripe_key,
            "setup intent client secret": client_secret,
        }.items()
        for spelling in spellings(secret)
        if spelling in logs
    }
    assert leaked == {}
    assert "Bearer" not in logs
    # No payloads at debug level either: the stripe SDK's request/response bodies are not logged.
    assert not any("body=" in str(r.get("msg")) for r in records)
