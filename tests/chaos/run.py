"""Chaos suite (`make chaos`): the real processes under load while faults are injected.

2× `meter serve --workers 1`, 2× `meter aggregate`, 2× `meter report` run as subprocesses
against a fresh migrated Postgres database, a redis-server of our own with `appendfsync always`
and the Stripe emulator (in this process; billing webhooks are signed and sent to serve A, with
duplicate deliveries). A load generator posts events for several customers with ~10% duplicate
ids, late events inside the window and a few invalid ones, retrying 503/429/timeouts/connection
errors with the SAME ids. Meanwhile a seeded schedule kill -9s and restarts every process kind
and Redis, terminates every Postgres backend of the run's database (what a Postgres restart does
to its clients; the server itself is shared with other suites), and makes Stripe answer 429 /
5xx / time out / drop responses. Then the load stops, faults are cleared, the pipeline drains,
and per (customer, meter, hour) — two meters; late events reach back to the subscriptions' start:

    emulator total (sum of /_emulator/meter_events, canceled excluded)
      == local rollup total (sum of usage_rollups.value_sum)
      == reference sum over the ids the API told us are in

Any drift fails the run, printing its seed (`python -m tests.chaos.run --seed N` replays the
schedule; timings of a real system still vary between runs).

Usage: `python -m tests.chaos.run [--long] [--seed N]` (Postgres from METER_TEST_DATABASE_URL,
else 127.0.0.1:5432/test, else an embedded server). The pytest `tests/chaos/test_chaos.py`
runs the short profile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from meter import auth
from meter.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, port_open
from meter.migrate import migrate
from meter.stripe_emulator import EmulatorConfig
from meter.stripe_emulator.server import RunningEmulator, running_emulator

TENANT = "chaos"
METERS = ("api_calls", "tokens")
STRIPE_METER_PATH = "*/billing/meter_event*"  # v2 session + stream, v1 meter events


@dataclass(frozen=True)
class Profile:
    name: str
    customers: int
    load_s: float  # how long the load generator runs
    concurrency: int  # concurrent posting loops
    batch: int  # events per request
    faults: int  # faults injected during the load
    drain_s: float  # bound on waiting for the ledger to balance


SHORT = Profile("short", customers=4, load_s=30.0, concurrency=4, batch=20, faults=9, drain_s=90.0)
LONG = Profile(
    "long", customers=12, load_s=300.0, concurrency=8, batch=50, faults=60, drain_s=300.0
)


# (customer, meter, hour as epoch seconds): the ledger is checked per hourly bucket.
LedgerKey = tuple[str, str, int]


def hour_of(epoch_s: float) -> int:
    return int(epoch_s) // 3600 * 3600


@dataclass
class Summary:
    seed: int
    profile: str
    sent: int = 0  # distinct ids sent (valid or not)
    requests: int = 0
    retries: int = 0
    duplicates_sent: int = 0  # re-sends of an id already sent earlier, on purpose
    answers: Counter[str] = field(default_factory=Counter)  # per-id answers by status
    rejected: Counter[str] = field(default_factory=Counter)  # by reason
    http_errors: Counter[str] = field(default_factory=Counter)  # 503, 429, timeout, conn…
    faults: Counter[str] = field(default_factory=Counter)
    in_count: int = 0  # ids the client knows are in (see Ledger.is_in)
    in_unacknowledged: int = 0  # of those, never answered `accepted`: landed on a failed try
    drift: dict[LedgerKey, tuple[Decimal, Decimal, Decimal]] = field(default_factory=dict)
    totals: dict[LedgerKey, tuple[Decimal, Decimal, Decimal]] = field(default_factory=dict)
    unanswered: int = 0
    # Processes that exited on their own (not killed by the schedule): name → exit code and the
    # end of its log. A process that cannot start again shows up as drift; this says why.
    exited: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.drift and not self.unanswered and not self.exited

    def table(self) -> str:
        rows = [
            ("profile / seed", f"{self.profile} / {self.seed}"),
            ("events sent (distinct ids)", self.sent),
            ("requests (incl. retries)", f"{self.requests} ({self.retries} retries)"),
            ("duplicate re-sends", self.duplicates_sent),
            ("answers accepted", self.answers["accepted"]),
            ("answers duplicate", self.answers["duplicate"]),
            ("answers rejected", self.answers["rejected"]),
            ("ids known in (reference)", self.in_count),
            ("  of which never `accepted`", self.in_unacknowledged),
            ("ids never answered", self.unanswered),
        ]
        rows += [(f"rejected: {r}", n) for r, n in sorted(self.rejected.items())]
        rows += [(f"http error: {e}", n) for e, n in sorted(self.http_errors.items())]
        rows += [(f"fault: {f}", n) for f, n in sorted(self.faults.items())]
        rows.append(("fault: webhook duplicates", "each delivery with p=0.2 (emulator)"))
        for (customer, meter, hour), (stripe_t, rollup_t, ref_t) in sorted(self.totals.items()):
            at = time.strftime("%H:00", time.gmtime(hour))
            rows.append(
                (
                    f"{customer}/{meter}/{at} stripe|rollup|ref",
                    f"{stripe_t} | {rollup_t} | {ref_t}",
                )
            )
        drift = f"{len(self.drift)} (customer, meter, hour)" if self.drift else "0"
        rows.append(("drift", drift))
        rows += [(f"exited on its own: {name}", why) for name, why in sorted(self.exited.items())]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


class Ledger:
    """What the client knows about each id it sent.

    The subtlety: an event whose request was answered 503 (Redis went away mid-commit), timed
    out, or lost its connection may nevertheless have landed in Redis; the pipeline counts it,
    yet the API never answered `accepted` for it. The load generator therefore retries every
    batch with the SAME ids until it gets a real answer. For an id that landed earlier, that
    answer is `duplicate`. Since we never send two different payloads under one id, an id is
    "in" — must be counted exactly once — iff ANY answer for it was `accepted` or `duplicate`:
    `accepted` means this request appended it, `duplicate` means an earlier attempt (a 503'd or
    timed-out one, or our on-purpose re-send after an `accepted`) did. That is the client's final
    knowledge; `rejected` ids are never in. An id with no answer at all (only errors until the
    deadline) is unknown: the run fails, as the reference would be ambiguous.
    """

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, set[str]] = {}

    def answer(self, event_id: str, status: str) -> None:
        self.statuses.setdefault(event_id, set()).add(status)

    def is_in(self, event_id: str) -> bool:
        return bool(self.statuses.get(event_id, set()) & {"accepted", "duplicate"})

    def reference(self) -> dict[LedgerKey, Decimal]:
        out: dict[LedgerKey, Decimal] = {}
        for event_id, event in self.events.items():
            if self.is_in(event_id):
                key = (event["customer"], event["meter"], hour_of(event["timestamp"]))
                out[key] = out.get(key, Decimal(0)) + Decimal(str(event["value"]))
        return out


# --------------------------------------------------------------------------- processes


class Proc:
    """One `python -m meter …` subprocess in its own process group; kill -9 and restart."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log = logdir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "meter", *self.args,
                env=self.env, stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    async def kill(self) -> None:
        """kill -9 (the whole group: serve may fork workers)."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            await self.proc.wait()
        self.proc = None

    async def stop(self) -> None:
        self._signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                await self.kill()
        self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def why(self) -> str:
        """Its exit code and the last lines of its log."""
        code = None if self.proc is None else self.proc.returncode
        tail = self.log.read_text(errors="replace").splitlines()[-5:] if self.log.exists() else []
        return f"exit {code}: " + " | ".join(tail)


async def wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_open("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- the run


class Run:
    def __init__(self, profile: Profile, seed: int, database_url: str, workdir: Path) -> None:
        self.profile = profile
        self.seed = seed
        self.rng = random.Random(seed)
        self.database_url = database_url
        self.workdir = workdir
        self.summary = Summary(seed=seed, profile=profile.name)
        self.ledger = Ledger()
        self.procs: dict[str, Proc] = {}
        self.ports: list[int] = []
        self.redis: EmbeddedRedis | None = None
        self.emu: RunningEmulator | None = None
        self.key = ""
        self.customers = [f"chaos-cust-{n}" for n in range(profile.customers)]
        self.stripe_ids: dict[str, str] = {}  # cus_ → our customer id
        self.meter_ids: dict[str, str] = {}  # mtr_ → meter event name
        self.seeded_at = 0.0
        self.stop_load = asyncio.Event()
        self.webhook_secret = "whsec_chaos_" + secrets.token_hex(16)
        self.http: aiohttp.ClientSession | None = None

    # -- setup

    def env(self) -> dict[str, str]:
        assert self.redis is not None
        assert self.emu is not None
        return {
            **os.environ,
            "METER_DATABASE_URL": self.database_url,
            "METER_REDIS_URL": self.redis.url,
            "METER_REDIS_PREFIX": "chaos",
            "METER_SHARDS": "4",
            "METER_LOG_LEVEL": "warning",
            "METER_METRICS_PORT": "0",  # two `meter serve` on this host
            "METER_BILLING_TENANT": TENANT,
            "METER_BILLING_JOB_INTERVAL": "5s",
            "METER_AGGREGATOR_LEASE_INTERVAL": "0.5s",
            "METER_AGGREGATOR_POLL_INTERVAL": "0.1s",
            "METER_REPORTER_POLL_INTERVAL": "0.2s",
            "METER_REPORTER_TIMEOUT": "2s",
            "METER_REPORTER_BACKOFF_BASE": "0.05s",
            "METER_REPORTER_BACKOFF_CAP": "1s",
            "METER_REPORTER_INVOICE_GRACE": "60s",
            "STRIPE_API_KEY": self.emu.api_key,
            "STRIPE_API_BASE": self.emu.api_base,
            "STRIPE_METER_EVENTS_BASE": self.emu.meter_events_base,
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
        }

    async def seed_stripe(self) -> None:
        """Like `meter dev`'s demo seeding: a meter, a metered price, customers subscribed."""
        assert self.emu is not None
        client = self.emu.client(timeout=30.0)
        product = await client.v1.products.create_async({"name": "API"})
        prices = []
        for event_name in METERS:
            meter = await client.v1.billing.meters.create_async(
                {
                    "display_name": event_name,
                    "event_name": event_name,
                    "default_aggregation": {"formula": "sum"},
                }
            )
            self.meter_ids[meter.id] = event_name
            price = await client.v1.prices.create_async(
                {
                    "product": product.id,
                    "currency": "usd",
                    "unit_amount": 1,
                    "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
                }
            )
            prices.append({"price": price.id})
        for name in self.customers:
            customer = await client.v1.customers.create_async(
                {"metadata": {"meter_customer": name, "meter_tenant": TENANT}}
            )
            self.stripe_ids[customer.id] = name
            await client.v1.subscriptions.create_async({"customer": customer.id, "items": prices})
        self.seeded_at = time.time()

    async def wait_synced(self, timeout_s: float = 90.0) -> None:
        """Bounded: until billing (webhooks → serve A) knows every customer's subscription."""
        assert self.http is not None
        headers = {"Authorization": f"Bearer {self.key}"}
        deadline = time.monotonic() + timeout_s
        pending = list(self.customers)
        while pending:
            name = pending[0]
            url = f"http://127.0.0.1:{self.ports[0]}/v1/customers/{name}/subscription"
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.http.get(url, headers=headers) as response:
                    if response.status == 200:
                        pending.pop(0)
                        continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"billing never synced the subscription of {name}")
            await asyncio.sleep(0.2)

    # -- load

    def _event(self, n: int) -> dict[str, Any]:
        rng = self.rng
        event: dict[str, Any] = {
            "id": f"ev-{self.seed}-{n}-{uuid.uuid4().hex[:8]}",
            "customer": rng.choice(self.customers),
            "meter": rng.choice(METERS),
            "value": rng.randint(1, 100),
            # Always explicit, so the reference knows each event's hour.
            "timestamp": round(time.time(), 3),
        }
        roll = rng.random()
        if roll < 0.15:
            # Late, inside the window — but after the subscriptions began, so it is attributed.
            earliest = int(self.seeded_at) + 2
            event["timestamp"] = rng.randint(earliest, max(earliest, int(time.time()) - 1))
        elif roll < 0.19:
            kind = rng.choice(("missing_customer", "invalid_timestamp", "too_late", "bad_value"))
            if kind == "missing_customer":
                del event["customer"]
            elif kind == "invalid_timestamp":
                event["timestamp"] = "yesterday-ish"
            elif kind == "too_late":
                event["timestamp"] = int(time.time()) - 40 * 86400
            else:
                event["value"] = "lots"
        return event

    async def _post(self, batch: list[dict[str, Any]]) -> None:
        """POST until answered (same ids every time), alternating serve processes."""
        assert self.http is not None
        body = orjson.dumps(batch)
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        deadline = time.monotonic() + 120.0
        attempt = 0
        while True:
            port = self.ports[(attempt + self.rng.randrange(2)) % 2]
            self.summary.requests += 1
            try:
                async with self.http.post(
                    f"http://127.0.0.1:{port}/v1/events",
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=5),
                ) as response:
                    if response.status == 200:
                        doc = await response.json()
                        for result in doc["results"]:
                            self.ledger.answer(result["id"], result["status"])
                            self.summary.answers[result["status"]] += 1
                            if result["status"] == "rejected":
                                self.summary.rejected[result.get("reason", "?")] += 1
                        return
                    self.summary.http_errors[str(response.status)] += 1
                    if response.status not in (429, 500, 502, 503, 504):
                        raise RuntimeError(f"unexpected {response.status}: {await response.text()}")
            except TimeoutError:
                self.summary.http_errors["timeout"] += 1
            except aiohttp.ClientError as exc:
                self.summary.http_errors[type(exc).__name__] += 1
            attempt += 1
            self.summary.retries += 1
            if time.monotonic() > deadline:
                return  # unanswered ids are reported and fail the run
            await asyncio.sleep(min(0.05 * 2**attempt, 1.0))

    async def _load_loop(self, loop_no: int) -> None:
        n = 0
        sent_ok: list[dict[str, Any]] = []
        while not self.stop_load.is_set():
            batch: list[dict[str, Any]] = []
            for _ in range(self.profile.batch):
                if sent_ok and self.rng.random() < 0.10:
                    batch.append(self.rng.choice(sent_ok))  # ~10% duplicate ids, same payload
                    self.summary.duplicates_sent += 1
                    continue
                event = self._event(loop_no * 10_000_000 + n)
                n += 1
                self.ledger.events[event["id"]] = event
                self.summary.sent += 1
                batch.append(event)
            # Never the same id twice in one batch (a duplicate of a fresh one is fine later).
            batch = list({e["id"]: e for e in batch}.values())
            await self._post(batch)
            sent_ok.extend(batch[-5:])
            del sent_ok[:-200]
            await asyncio.sleep(0.02)

    # -- faults

    async def _stripe_fault(self, rule: dict[str, Any]) -> None:
        assert self.http is not None
        assert self.emu is not None
        async with self.http.post(
            f"{self.emu.api_base}/_emulator/faults", json={"path": STRIPE_METER_PATH, **rule}
        ) as response:
            response.raise_for_status()

    async def _restart(self, name: str, down_s: float) -> None:
        proc = self.procs[name]
        await proc.kill()
        await asyncio.sleep(down_s)
        await proc.start()

    async def _terminate_backends(self) -> None:
        """Every connection of the run's database dies at once, as in a Postgres restart."""
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()

    async def inject(self, kind: str) -> None:
        rng = self.rng
        down = rng.uniform(0.3, 2.0)
        if kind in ("kill_serve", "kill_aggregate"):
            prefix = kind.removeprefix("kill_")
            await self._restart(f"{prefix}-{rng.randrange(2)}", down)
        elif kind == "kill_report":
            await self._restart(f"report-{rng.randrange(2)}", down)
        elif kind == "kill_pg_backends":
            await self._terminate_backends()
        elif kind == "kill_redis":
            assert self.redis is not None
            await asyncio.to_thread(self.redis.kill)
            await asyncio.sleep(down)
            await asyncio.to_thread(self.redis.start)
        elif kind == "stripe_429":
            await self._stripe_fault({"mode": "rate_limit", "count": rng.randint(5, 20)})
        elif kind == "stripe_5xx":
            await self._stripe_fault(
                {
                    "mode": "error",
                    "status": rng.choice([500, 502, 503]),
                    "count": rng.randint(3, 10),
                }
            )
        elif kind == "stripe_timeout":
            await self._stripe_fault({"mode": "timeout", "delay": 3.0, "count": rng.randint(1, 3)})
        elif kind == "stripe_drop":
            await self._stripe_fault({"mode": "drop", "count": rng.randint(1, 4)})
        self.summary.faults[kind] += 1

    async def fault_schedule(self) -> None:
        kinds = [
            "kill_serve", "kill_aggregate", "kill_report", "kill_redis", "kill_pg_backends",
            "stripe_429", "stripe_5xx", "stripe_timeout", "stripe_drop",
        ]  # fmt: skip
        # Every kind at least once, then random ones; at seeded times within the load.
        schedule = kinds[: self.profile.faults] + [
            self.rng.choice(kinds) for _ in range(max(0, self.profile.faults - len(kinds)))
        ]
        self.rng.shuffle(schedule)
        span = self.profile.load_s * 0.85
        times = sorted(self.rng.uniform(1.0, span) for _ in schedule)
        started = time.monotonic()
        for at, kind in zip(times, schedule, strict=True):
            await asyncio.sleep(max(0.0, at - (time.monotonic() - started)))
            await self.inject(kind)

    # -- check

    async def emulator_totals(self) -> dict[LedgerKey, Decimal]:
        assert self.http is not None
        assert self.emu is not None
        async with self.http.get(f"{self.emu.api_base}/_emulator/meter_events") as response:
            doc = await response.json()
        out: dict[LedgerKey, Decimal] = {}
        for e in doc["data"]:
            if e["canceled"]:
                continue
            customer = self.stripe_ids.get(e["customer"], e["customer"])
            key = (customer, e["event_name"], hour_of(e["timestamp"]))
            out[key] = out.get(key, Decimal(0)) + Decimal(e["value"])
        return out

    async def rollup_totals(self) -> dict[LedgerKey, Decimal]:
        conn = await asyncpg.connect(self.database_url)
        try:
            rows = await conn.fetch(
                "SELECT customer, meter, extract(epoch FROM date_trunc('hour', bucket_start))"
                "::bigint AS hour, sum(value_sum) AS total FROM usage_rollups"
                " WHERE tenant = $1 GROUP BY 1, 2, 3",
                TENANT,
            )
        finally:
            await conn.close()
        return {(r["customer"], r["meter"], r["hour"]): Decimal(r["total"]) for r in rows}

    async def compare(self) -> dict[LedgerKey, tuple[Decimal, Decimal, Decimal]]:
        stripe_t = await self.emulator_totals()
        rollup_t = await self.rollup_totals()
        ref_t = self.ledger.reference()
        zero = Decimal(0)
        self.summary.totals = {
            k: (stripe_t.get(k, zero), rollup_t.get(k, zero), ref_t.get(k, zero))
            for k in sorted(set(stripe_t) | set(rollup_t) | set(ref_t))
        }
        return {k: v for k, v in self.summary.totals.items() if not v[0] == v[1] == v[2]}

    async def drain(self) -> None:
        """Bounded: poll until the three totals agree, then one `--once` pass each, re-check."""
        deadline = time.monotonic() + self.profile.drain_s
        while time.monotonic() < deadline:
            if not await self.compare():
                break
            await asyncio.sleep(1.0)
        for name in ("aggregate", "report"):
            once = Proc(f"{name}-once", [name, "--once"], self.env(), self.workdir)
            await once.start()
            assert once.proc is not None
            try:
                await asyncio.wait_for(once.proc.wait(), 120)
            except TimeoutError:
                await once.kill()
            else:
                if once.proc.returncode != 0:
                    self.summary.exited[once.name] = once.why()
        for proc in self.procs.values():
            if not proc.alive:
                self.summary.exited[proc.name] = proc.why()
        self.summary.drift = await self.compare()

    # -- the whole thing

    async def run(self) -> Summary:
        self.ports = [free_port(), free_port()]
        conn = await asyncpg.connect(self.database_url)
        try:
            self.key = await auth.create_key(conn, name="chaos", tenant=TENANT)
        finally:
            await conn.close()
        self.redis = EmbeddedRedis(self.workdir / "redis", appendfsync="always")
        await asyncio.to_thread(self.redis.start)
        config = EmulatorConfig(
            port=0,
            meter_events_port=0,
            webhook_url=f"http://127.0.0.1:{self.ports[0]}/stripe/webhook",
            webhook_secret=self.webhook_secret,
            webhook_retry_base=0.5,
            webhook_max_attempts=12,
            webhook_duplicate_probability=0.2,
            fault_seed=self.seed,
        )
        try:
            async with (
                running_emulator(config) as emu,
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            ):
                self.emu, self.http = emu, http
                try:
                    await self._run()
                finally:
                    await asyncio.gather(*(p.stop() for p in self.procs.values()))
        finally:
            await asyncio.to_thread(self.redis.stop)
        return self.summary

    async def _run(self) -> None:
        env = self.env()
        for i, port in enumerate(self.ports):
            args = ["serve", "--workers", "1", "--port", str(port)]
            self.procs[f"serve-{i}"] = Proc(f"serve-{i}", args, env, self.workdir)
        for i in range(2):
            self.procs[f"aggregate-{i}"] = Proc(f"aggregate-{i}", ["aggregate"], env, self.workdir)
        for i in range(2):
            self.procs[f"report-{i}"] = Proc(f"report-{i}", ["report"], env, self.workdir)
        for proc in self.procs.values():
            await proc.start()
        for port in self.ports:
            await wait_port(port, 60)
        await self.seed_stripe()
        await self.wait_synced()
        await asyncio.sleep(1.5)  # late timestamps start 2 s after the subscriptions

        loops = [asyncio.create_task(self._load_loop(i)) for i in range(self.profile.concurrency)]
        faults = asyncio.create_task(self.fault_schedule())
        try:
            await asyncio.sleep(self.profile.load_s)
            await faults  # the schedule ends within the load span (plus its last restart)
        finally:
            self.stop_load.set()
            if not faults.done():
                faults.cancel()
            await asyncio.gather(*loops, faults, return_exceptions=True)
        for loop_task in loops:
            if (error := loop_task.exception()) is not None:
                raise error

        # Faults off; every process up again (a restart may have been cut short).
        assert self.emu is not None
        assert self.http is not None
        async with self.http.delete(f"{self.emu.api_base}/_emulator/faults"):
            pass
        if self.redis is not None and not port_open("127.0.0.1", self.redis.port):
            await asyncio.to_thread(self.redis.start)
        for proc in self.procs.values():
            if not proc.alive:
                await proc.start()
        self.summary.unanswered = sum(
            1 for i in self.ledger.events if i not in self.ledger.statuses
        )
        self.summary.in_count = sum(1 for i in self.ledger.events if self.ledger.is_in(i))
        self.summary.in_unacknowledged = sum(
            1 for i in self.ledger.events if self.ledger.statuses.get(i) == {"duplicate"}
        )
        await self.drain()


async def chaos(profile: Profile, seed: int, database_url: str, workdir: Path) -> Summary:
    """Run one profile; returns the summary (check `.drift` and `.unanswered`)."""
    return await Run(profile, seed, database_url, workdir).run()


def report(summary: Summary) -> str:
    verdict = "OK" if summary.ok else f"FAILED — replay with --seed {summary.seed}"
    return f"chaos {summary.profile} seed={summary.seed}: {verdict}\n{summary.table()}"


# --------------------------------------------------------------------------- CLI


async def _fresh_database(server_url: str) -> tuple[str, str]:
    name = f"meter_chaos_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url, name


async def _drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--long", action="store_true", help="the long profile (minutes)")
    parser.add_argument("--seed", type=int, help="fault schedule and load seed (default: random)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    profile = LONG if args.long else SHORT
    with tempfile.TemporaryDirectory(prefix="meter-chaos-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        pg: EmbeddedPostgres | None = None
        server_url = os.environ.get("METER_TEST_DATABASE_URL")
        if not server_url:
            if port_open("127.0.0.1", 5432):
                server_url = "postgresql://postgres@127.0.0.1:5432/test"
            else:
                pg = EmbeddedPostgres(workdir / "pg")
                server_url = pg.start()
        try:
            url, name = asyncio.run(_fresh_database(server_url))
            try:
                summary = asyncio.run(chaos(profile, seed, url, workdir))
            finally:
                asyncio.run(_drop_database(server_url, name))
        finally:
            if pg is not None:
                pg.stop()
        print(report(summary))
        return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
