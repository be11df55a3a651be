"""The billing simulation (`make simulate`): real processes, test clocks, a model of its own.

One batch: a fresh database, a redis-server of its own, the Stripe emulator (in this process, its
signed webhooks to `meter serve`), `meter serve` as a subprocess, and `meter aggregate --once` /
`meter report --once` / `meter usage void` as subprocesses whenever the pipeline is drained.
Every scenario of the batch (generator.py) has a customer on its own test clock, which starts
`periods + 1` days in the past (daily prices), so every event is timestamped in the clock's frame
and still in the past for ingest (`METER_LATE_WINDOW` covers the span;
`METER_REPORTER_INVOICE_GRACE` exceeds it, so only the invoice webhooks close a period).

Per period k, for every scenario (on its own period boundaries: a billing-cycle anchor reset or
a cancel now ends a period early): advance the clock to a minute before the period ends, post the
period's events (and late, duplicate, invalid ones; voids), drain, check the open period (ours
== model == preview); advance past the period end (the invoice is a draft), post the grace-hour
events, drain; advance past the finalization, check the finalized invoice against the model.
After the last period, one more open stage takes the last late events. Then the end checks:
nothing sent into a finalized period, Stripe's delta totals == the model's, no stuck outbox row.

Chaos per drain (seeded): kill -9 of the aggregator or the reporter mid-run (then run again),
Stripe 429/5xx/timeouts/lost responses on the meter event paths, the raw log off; kill -9 of
`meter serve` while events are posted (the client retries the same ids).

Usage: `python -m tests.simulation.run [--seed N] [--scenarios N] [--periods N] [--batch N]`.
A failing batch prints its seed and a replay command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import datetime as dt
import logging
import math
import random
import secrets
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import asyncpg
import orjson
import stripe

from meter import auth
from meter.embedded import EmbeddedRedis, free_port
from meter.stripe_emulator.server import RunningEmulator, running_emulator
from tests.harness import (
    STRIPE_FAULTS,
    EmulatorControl,
    Proc,
    drop_database,
    fresh_database,
    own_redis,
    process_env,
    server_url,
    stripe_fault_rule,
    wait_port,
    webhook_emulator,
)
from tests.simulation import invariants, queries
from tests.simulation.generator import (
    BATCH_FEATURES,
    DAY,
    DIMENSION_AGGREGATIONS,
    DIMENSION_KEY,
    DIMENSION_LIMIT,
    FEATURES,
    KINDS,
    METERS,
    OWN,
    SEATS,
    TENANTS,
    UNIQUE_PROPERTY,
    Action,
    AddItem,
    Cancel,
    DeleteCustomer,
    Event,
    Frame,
    Item,
    MeterChange,
    MeterStatus,
    Pause,
    Post,
    PriceChange,
    Quantity,
    RemoveItem,
    Reset,
    Resume,
    Return,
    Scenario,
    Stage,
    Void,
    generate,
    meter_spec,
)
from tests.simulation.model import DELTA, NONE, Account, Price, Usage, billed_in

HOUR = 3600


def _not_a_lost_client(record: logging.LogRecord) -> bool:
    """A `--once` process killed mid-request is the simulation's doing, not an emulator fault."""
    return not (record.exc_info and isinstance(record.exc_info[1], ConnectionResetError))


logging.getLogger("meter.stripe_emulator.app").addFilter(_not_a_lost_client)


@dataclass(frozen=True)
class Options:
    seed: int
    scenarios: int
    periods: int = 3
    batch: int = 25
    kinds: tuple[str, ...] = tuple(KINDS)
    features: frozenset[str] = frozenset(FEATURES + BATCH_FEATURES)
    chaos: bool = True
    drain_timeout_s: float = 120.0
    all_violations: bool = False

    def replay(self, seed: int, count: int) -> str:
        args = f"--seed {seed} --scenarios {count} --batch {count} --periods {self.periods}"
        if self.kinds != tuple(KINDS):
            args += f" --kinds {','.join(self.kinds)}"
        if self.features != frozenset(FEATURES + BATCH_FEATURES):
            args += f" --features {','.join(sorted(self.features)) or 'none'}"
        if not self.chaos:
            args += " --no-chaos"
        return f'make simulate SIM_ARGS="{args}"'


class Size(NamedTuple):
    scenarios: int
    periods: int
    batch: int


SHORT = Size(scenarios=6, periods=3, batch=6)
LONG = Size(scenarios=200, periods=3, batch=25)


@dataclass
class Result:
    seed: int
    scenarios: list[Scenario]
    replay: str
    violations: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    def report(self, most: int = 60) -> str:
        """The summary; at most `most` violations (0: all)."""
        head = "OK" if self.ok else f"FAILED ({len(self.violations)} violations)"
        lines = [f"simulation batch seed={self.seed}: {head} in {self.seconds:.0f} s"]
        lines += [f"  {k}: {v}" for k, v in sorted(self.counts.items())]
        if not self.ok:
            lines.append("  scenarios:")
            lines += [f"    {s.describe()}" for s in self.scenarios]
            lines.append("  violations:")
            shown = self.violations[:most] if most else self.violations
            lines += [f"    - {v}" for v in shown]
            if len(shown) < len(self.violations):
                lines.append(f"    … and {len(self.violations) - len(shown)} more (--all)")
            lines.append(f"  replay: {self.replay}")
        return "\n".join(lines)


@dataclass
class Live:
    """A scenario in the run: its Stripe ids, model account and bookkeeping."""

    scenario: Scenario
    account: Account
    cus: str = ""
    clock: str = ""
    subscription: str = ""
    meter_of_price: dict[str, str] = field(default_factory=dict)
    finalized_at: dict[int, int] = field(default_factory=dict)  # period → clock time
    unbilled: list[Event] = field(default_factory=list)  # posted, not drained yet
    unbilled_voids: list[Event] = field(default_factory=list)
    raw_logged: dict[str, bool] = field(default_factory=dict)  # event id → raw log on at fold
    voided: set[str] = field(default_factory=set)
    bounds: list[tuple[int, int]] = field(default_factory=list)  # the scenario's own periods
    open_floor: int = 0  # a reset opened this period before the batch's stages did
    ended_at: int | None = None  # the subscription ends (a cancel): later usage bills nowhere
    last_period: int | None = None  # the subscription's last period (a cancel)
    no_open_from: int | None = None  # from this period on nothing is open to project (a cancel)
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)  # meter → when an item
    # bills it [from, until) (a meter change, an item added or removed; absent: always)
    taken_off: dict[str, float] = field(default_factory=dict)  # meter → when its price left
    second: Account | None = None  # a second subscription's (its usage: `account.billed`)
    second_sub: str = ""
    paused: dict[int, str] = field(default_factory=dict)  # period → pause behavior at its end
    inactive: set[str] = field(default_factory=set)  # own meters whose Stripe meter is inactive
    held: list[Event] = field(default_factory=list)  # drained while inactive: not sent yet
    held_voids: list[Event] = field(default_factory=list)
    deleted_at: int | None = None  # its Stripe customer was deleted: earlier usage bills nowhere
    former: list[str] = field(default_factory=list)  # deleted Stripe customers of the scenario
    uninvoiced: set[int] = field(default_factory=set)  # periods that end with no invoice
    mapped: bool = False  # its price mappings are made (`priced_dimensions`)

    def ended(self, k: int) -> bool:
        """Period `k` does not exist: the subscription ended before it."""
        return self.last_period is not None and k > self.last_period

    def period_of(self, timestamp: Any) -> int:
        ts = float(timestamp)
        for k, (start, end) in enumerate(self.bounds):
            if start <= ts < end:
                return k
        return math.floor((ts - self.bounds[0][0]) / DAY)


class Batch:
    def __init__(
        self, options: Options, seed: int, scenarios: list[Scenario], frame: Frame,
        database_url: str, workdir: Path,
    ) -> None:  # fmt: skip
        self.options = options
        self.seed = seed
        self.rng = random.Random(seed ^ 0x5EED)
        self.frame = frame
        self.database_url = database_url
        self.workdir = workdir
        self.live = [Live(s, Account({i.meter: (i.aggregation, i.price) for i in s.items},
                                     s.coupon, s.tax, trial_periods=s.trial_periods,
                                     twins={i.meter: i.price for i in s.twins},
                                     mappings=_mappings(s)),
                          bounds=[frame.period(k) for k in range(frame.periods + 1)])
                     for s in scenarios]  # fmt: skip
        for live in self.live:  # a second subscription bills the same usage of its meters
            if live.scenario.second:
                items = {i.meter: (i.aggregation, i.price) for i in live.scenario.second}
                live.second = Account(items, billed=live.account.billed)
        for live in self.live:
            if (seats := live.scenario.seats) is not None:
                account = live.account
                account.seats, account.seat_unit = SEATS, seats.unit
                account.seat_history = [(0, seats.quantity)]
        self.result = Result(seed, scenarios, options.replay(seed, len(scenarios)))
        self.keys: dict[str, str] = {}
        self.statuses: dict[tuple[str, str], set[str]] = {}  # (tenant, id) → answers
        self.events: dict[tuple[str, str], Event] = {}
        self.port = 0
        self.redis: EmbeddedRedis | None = None
        self.running: RunningEmulator | None = None
        self.sdk: stripe.StripeClient | None = None
        self.http: aiohttp.ClientSession | None = None
        self.control: EmulatorControl | None = None
        self.serve: Proc | None = None
        self.secret = "whsec_sim_" + secrets.token_hex(16)
        self.runs = 0
        self.open_period = 0
        self.serve_killed = False  # between our kill -9 of serve and its restart
        self.meter_ids: dict[str, str] = {}
        self.product = ""
        # What each action type does (Post is batched by `stage`); new scenario kinds add theirs.
        self.handlers: dict[type[Action], Callable[[Live, Action], Awaitable[None]]] = {
            Void: self.void,
            Reset: self.reset,
            Cancel: self.cancel,
            PriceChange: self.change_price,
            Pause: self.pause,
            MeterChange: self.change_meter,
            AddItem: self.add_item,
            RemoveItem: self.remove_item,
            Resume: self.resume,
            MeterStatus: self.meter_status,
            DeleteCustomer: self.delete_customer,
            Quantity: self.change_quantity,
            Return: self.come_back,
        }

    # ------------------------------------------------------------------ setup

    def env(self, *, raw_log: bool = True, horizon_s: float | None = None) -> dict[str, str]:
        assert self.redis is not None
        assert self.running is not None
        span = self.frame.periods + 3
        extra = {} if horizon_s is None else {"METER_REPORTER_DEDUPE_HORIZON": f"{horizon_s}s"}
        return process_env(
            self.database_url,
            self.redis.url,
            self.running,
            self.secret,
            METER_REDIS_PREFIX="sim",
            METER_LATE_WINDOW=f"{self.frame.late_window_s}s",
            METER_RAW_LOG="1" if raw_log else "0",
            METER_BILLING_TENANT=TENANTS[0],
            METER_BILLING_JOB_INTERVAL="0",
            METER_AGGREGATOR_POLL_INTERVAL="0.05s",
            METER_REPORTER_POLL_INTERVAL="0.1s",
            METER_REPORTER_BACKOFF_CAP="0.5s",
            METER_REPORTER_INVOICE_GRACE=f"{span * DAY}s",
            # Fewer than the generator's models: the guard folds some usage into `_other`.
            METER_DIMENSION_COMBINATIONS=str(DIMENSION_LIMIT),
            **extra,
        )

    async def setup_catalog(self) -> None:
        """API keys, local meter definitions, the Stripe meters and the product."""
        assert self.sdk is not None
        sdk = self.sdk
        conn = await asyncpg.connect(self.database_url)
        try:
            for tenant in TENANTS:
                self.keys[tenant] = await auth.create_key(conn, name=f"sim-{tenant}", tenant=tenant)
                for name, (aggregation, _, local) in METERS.items():
                    if local:
                        prop = UNIQUE_PROPERTY if aggregation == "unique_count" else None
                        await conn.execute(queries.DEFINE_METER, tenant, name, aggregation, prop)
                    if aggregation in DIMENSION_AGGREGATIONS:
                        # Broken down by model since long before the frame: every event is
                        # folded per combination, voids and re-attribution included.
                        await conn.execute(
                            queries.SET_DIMENSIONS,
                            tenant,
                            name,
                            dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
                            [DIMENSION_KEY],
                        )
            # Meters of a scenario's own (`OWN`): its tenant's definitions (a mapped value's
            # Stripe meter is none of ours: no events are posted to it).
            for live in self.live:
                mapped = {name for _, _, name in live.scenario.mappings}
                for item in live.scenario.items:
                    aggregation, _, local = meter_spec(item.meter)
                    if item.meter not in METERS and local and item.meter not in mapped:
                        prop = UNIQUE_PROPERTY if aggregation == "unique_count" else None
                        await conn.execute(queries.DEFINE_METER, live.scenario.tenant,
                                           item.meter, aggregation, prop)  # fmt: skip
                for meter in live.scenario.dimension_values:  # `priced_dimensions`
                    since = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
                    tenant = live.scenario.tenant
                    await conn.execute(
                        queries.SET_DIMENSIONS, tenant, meter, since, [DIMENSION_KEY]
                    )
        finally:
            await conn.close()
        names = sorted(set(METERS) | {i.meter for x in self.live for i in x.scenario.items})
        for name in names:
            formula = meter_spec(name)[1]
            meter_params: Any = {"display_name": name, "event_name": name,
                           "default_aggregation": {"formula": formula}}  # fmt: skip
            meter = await sdk.v1.billing.meters.create_async(meter_params)
            self.meter_ids[name] = meter.id
        self.product = (await sdk.v1.products.create_async({"name": "Simulated API"})).id

    async def setup_customers(self, lives: Sequence[Live]) -> None:
        """Per scenario: a test clock at the frame's start, the customer, its prices, coupon
        and tax rate, and the subscription; then the webhooks are waited for."""
        assert self.sdk is not None
        sdk = self.sdk
        for live in lives:
            clock = await sdk.v1.test_helpers.test_clocks.create_async(
                {"frozen_time": self.frame.start}
            )
            live.clock = clock.id
            await self.subscribe(live)
        await self.settle()

    async def subscribe(self, live: Live) -> None:
        """The scenario's Stripe customer (on its clock, named by our id in its metadata), its
        prices, coupon and tax rate, and its subscription."""
        assert self.sdk is not None
        sdk = self.sdk
        s = live.scenario
        cus = await sdk.v1.customers.create_async(
            {"email": f"{s.customer}@{s.tenant}.example", "test_clock": live.clock,
             "metadata": {"meter_customer": s.customer, "meter_tenant": s.tenant}}
        )  # fmt: skip
        live.cus = cus.id
        items: list[Any] = [{"price": await self.price(live, i.meter, i.price)}
                            for i in s.items + s.twins]  # fmt: skip
        if s.seats is not None:  # a licensed item, billed in advance
            seat: Any = {"product": self.product, "currency": "usd", "unit_amount": s.seats.unit,
                         "recurring": {"interval": "day"}}  # fmt: skip
            seat_price = (await sdk.v1.prices.create_async(seat)).id
            live.meter_of_price[seat_price] = SEATS
            items.append({"price": seat_price, "quantity": s.seats.quantity})
        create: Any = {"customer": cus.id, "items": items}
        if s.billing_mode is not None:
            create["billing_mode"] = {"type": s.billing_mode}
        if s.trial_periods:
            create["trial_end"] = live.bounds[s.trial_periods - 1][1]
        if s.tax is not None:
            rate = await sdk.v1.tax_rates.create_async(
                {"display_name": "VAT", "percentage": float(s.tax.percentage),
                 "inclusive": s.tax.inclusive}
            )  # fmt: skip
            create["default_tax_rates"] = [rate.id]
        if s.coupon is not None:
            c = s.coupon
            params: Any = {"duration": c.duration}
            if c.duration == "repeating":
                params["duration_in_months"] = 3
            if c.percent_off is not None:
                params["percent_off"] = float(c.percent_off)
            else:
                params |= {"amount_off": c.amount_off, "currency": "usd"}
            coupon = await sdk.v1.coupons.create_async(params)
            create["discounts"] = [{"coupon": coupon.id}]
        sub = await sdk.v1.subscriptions.create_async(create)
        live.subscription = sub.id
        await self.map_prices(live)
        for item in sub["items"].data:  # names our pending (proration) lines by item
            if live.meter_of_price.get(item.price.id) == SEATS:
                live.meter_of_price[item.id] = SEATS
        if s.second:  # the customer's second subscription, on a meter of the first
            prices = [await self.price(live, i.meter, i.price) for i in s.second]
            second: Any = {"customer": cus.id, "items": [{"price": p} for p in prices]}
            live.second_sub = (await sdk.v1.subscriptions.create_async(second)).id

    async def map_prices(self, live: Live) -> None:
        """Tell meter, as its users do (`meter meters map`, docs/dimensions.md), which model
        values of a meter are priced on their own: by which Stripe meter and price."""
        s = live.scenario
        if live.mapped or not s.mappings:
            return
        price_of = {meter: price for price, meter in live.meter_of_price.items()}
        for meter, value, name in s.mappings:
            args = ["meters", "map", meter, "--filter", f"{DIMENSION_KEY}={value}",
                    "--event-name", name, "--price", price_of[name],
                    "--tenant", s.tenant]  # fmt: skip
            proc = Proc(f"map-{name}", args, self.env(), self.workdir)
            await proc.start()
            if await proc.wait(60) != 0:
                self.result.violations.append(f"#{s.index} meters map {name}: {proc.why()}")
            self.result.counts["price mappings"] += 1
        live.mapped = True

    async def price(self, live: Live, meter: str, price: Price) -> str:
        """A daily metered Stripe price on `meter`; its id."""
        assert self.sdk is not None
        params: Any = {
            "product": self.product,
            "currency": "usd",
            **Item(meter, meter_spec(meter)[0], meter_spec(meter)[1], price).stripe_price(),
            "recurring": {"interval": "day", "usage_type": "metered",
                          "meter": self.meter_ids[meter]},
        }  # fmt: skip
        created = await self.sdk.v1.prices.create_async(params)
        live.meter_of_price[created.id] = meter
        return str(created.id)

    async def settle(self, timeout_s: float = 90.0) -> None:
        """Until every webhook the emulator emitted was answered 2xx by serve."""
        assert self.running is not None
        emu = self.running.emu
        deadline = time.monotonic() + timeout_s
        while True:
            events = {e["id"] for e in emu.state.all("event")}
            ok = {d["event"] for d in emu.deliveries
                  if d["status"] is not None and 200 <= d["status"] < 300}  # fmt: skip
            if events <= ok and (emu.outbox is None or emu.outbox.empty()):
                return
            if self.serve is not None and not self.serve.alive and not self.serve_killed:
                self.result.violations.append(f"serve exited on its own: {self.serve.why()}")
                await self.serve.start()
            if time.monotonic() > deadline:
                raise TimeoutError(f"webhooks not delivered: {sorted(events - ok)[:5]}")
            await asyncio.sleep(0.05)

    async def advance(self, k: int, offset: int) -> None:
        """Move every clock to `offset` seconds from the end of its scenario's period `k`; maybe
        kill -9 serve while the webhooks are delivered."""
        assert self.sdk is not None
        killer = None
        if self.options.chaos and self.rng.random() < 0.2:
            killer = asyncio.create_task(self._kill_serve(self.rng.uniform(0.0, 0.5)))
        try:
            for live in self.live:
                await self.sdk.v1.test_helpers.test_clocks.advance_async(
                    live.clock, {"frozen_time": live.bounds[k][1] + offset}
                )
            await self.settle()
        finally:
            if killer is not None:
                await killer
        await self.settle()

    # ------------------------------------------------------------------ posting

    async def post(self, events: Sequence[Event]) -> None:
        """Post per tenant in batches, retrying errors with the same ids; maybe kill serve."""
        by_tenant: dict[str, list[Event]] = {}
        for e in events:
            by_tenant.setdefault(e.tenant, []).append(e)
            self.events.setdefault((e.tenant, e.id), e)
        killer = None
        roll = self.rng.random() if self.options.chaos else 1.0
        if roll < 0.3:
            killer = asyncio.create_task(self._kill_serve(self.rng.uniform(0.0, 0.3)))
        elif roll < 0.45:
            killer = asyncio.create_task(self._kill_redis(self.rng.uniform(0.0, 0.3)))
        try:
            for tenant, batch in sorted(by_tenant.items()):
                for i in range(0, len(batch), 50):
                    await self._post(tenant, batch[i : i + 50])
        finally:
            if killer is not None:
                await killer

    async def _kill_serve(self, after_s: float) -> None:
        assert self.serve is not None
        await asyncio.sleep(after_s)
        self.serve_killed = True
        await self.serve.kill()
        self.result.counts["kill -9 serve"] += 1
        await asyncio.sleep(self.rng.uniform(0.1, 0.8))
        await self.serve.start()
        await wait_port(self.port, 60)
        self.serve_killed = False

    async def _kill_redis(self, after_s: float) -> None:
        """kill -9 of the run's Redis (`appendfsync always`: what was acknowledged stays)."""
        assert self.redis is not None
        await asyncio.sleep(after_s)
        await asyncio.to_thread(self.redis.kill)
        self.result.counts["kill -9 redis"] += 1
        await asyncio.sleep(self.rng.uniform(0.1, 0.8))
        await asyncio.to_thread(self.redis.start)

    async def _post(self, tenant: str, batch: list[Event]) -> None:
        assert self.http is not None
        body = orjson.dumps([e.body() for e in batch])
        url = f"http://127.0.0.1:{self.port}/v1/events"
        headers = {"Authorization": f"Bearer {self.keys[tenant]}",
                   "Content-Type": "application/json"}  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                async with self.http.post(url, data=body, headers=headers) as response:
                    if response.status == 200:
                        doc = await response.json()
                        for e, r in zip(batch, doc["results"], strict=True):
                            self.statuses.setdefault((tenant, e.id), set()).add(r["status"])
                            self.result.counts[f"answer {r['status']}"] += 1
                        return
                    self.result.counts[f"ingest http {response.status}"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.result.counts[f"ingest {type(exc).__name__}"] += 1
            if time.monotonic() > deadline:
                self.result.violations.append(f"{len(batch)} events never answered")
                return
            await asyncio.sleep(0.2)

    def is_in(self, e: Event) -> bool:
        return bool(self.statuses.get((e.tenant, e.id), set()) & {"accepted", "duplicate"})

    # ------------------------------------------------------------------ draining

    async def _once(
        self, name: str, args: list[str], env: dict[str, str], kill: bool
    ) -> tuple[int, str]:
        """One `--once` process; with `kill`, kill -9 it at a random moment and run it again.
        Its exit code and the end of its log."""
        while True:
            self.runs += 1
            proc = Proc(f"{name}-{self.runs}", args, env, self.workdir)
            await proc.start()
            if kill:
                kill = False
                if await proc.wait(self.rng.uniform(0.3, 2.5)) is None:
                    await proc.kill()
                    self.result.counts[f"kill -9 {name}"] += 1
                    continue
            code = await proc.wait(self.options.drain_timeout_s)
            if code is None:
                await proc.kill()
                raise TimeoutError(f"{name} --once did not finish: {proc.why()}")
            return code, proc.why()

    async def drain(self) -> None:
        """Aggregate everything accepted, then report until the outbox has nothing pending;
        then tell the model where the drained usage is billed."""
        assert self.control is not None
        chaos = self.options.chaos
        raw_log = not (chaos and self.rng.random() < 0.3)
        self.result.counts["drains" + ("" if raw_log else " with METER_RAW_LOG=0")] += 1
        # Sometimes the reporter's dedupe horizon is a second, so that rows left unsent by a
        # kill are checked against Stripe's event summaries before they are sent again.
        horizon = 1.0 if chaos and self.rng.random() < 0.25 else None
        if horizon is not None:
            self.result.counts["drains with a 1 s dedupe horizon"] += 1
        env = self.env(raw_log=raw_log, horizon_s=horizon)
        if chaos and self.rng.random() < 0.6:
            kind = self.rng.choice(STRIPE_FAULTS)
            await self.control.fault(stripe_fault_rule(kind, self.rng))
            self.result.counts[f"fault {kind}"] += 1
        code, why = await self._once("aggregate", ["aggregate", "--once"], env,
                                     chaos and self.rng.random() < 0.3)  # fmt: skip
        if code != 0:
            self.result.violations.append(f"aggregate --once failed: {why}")
        deadline = time.monotonic() + self.options.drain_timeout_s
        kill = chaos and self.rng.random() < 0.4
        while True:
            code, why = await self._once("report", ["report", "--once"], env, kill)
            kill = False
            conn = await asyncpg.connect(self.database_url)
            try:
                pending = await conn.fetchval(queries.PENDING_OUTBOX)
            finally:
                await conn.close()
            if code == 0 and not pending:
                break
            if time.monotonic() > deadline:
                self.result.violations.append(f"report never drained ({pending} pending): {why}")
                break
            await asyncio.sleep(0.3)
        await self.control.clear_faults()
        for live in self.live:
            self._bill(live, raw_log)

    def _bill(self, live: Live, raw_log: bool) -> None:
        """Usage drained now is billed where the contract says (model.billed_in); none after
        the subscription ended, nor carried past its last period."""
        account = live.account
        for e in live.unbilled:
            live.raw_logged.setdefault(e.id, raw_log)  # folded now (held usage: earlier)
            if e.meter in live.inactive:
                live.held.append(e)  # its Stripe meter is inactive: meter holds it
                continue
            aggregation = meter_spec(e.meter)[0]
            if float(e.timestamp) < live.taken_off.get(e.meter, -math.inf):
                self._taken_off(live, e)
                continue
            where = self._where(live, e)
            if where is not None:
                value = Decimal(1) if aggregation == "count" else Decimal(str(e.value))
                key = (e.properties or {}).get(UNIQUE_PROPERTY, "")
                usage = Usage(e.id, value, float(e.timestamp), key, _dimension(e))
                account.bill(where, e.meter, usage)
        for e in live.unbilled_voids:
            if e.meter in live.inactive:
                live.held_voids.append(e)
                continue
            aggregation = meter_spec(e.meter)[0]
            where = self._where(live, e)
            if where is not None:
                value = Decimal(-1) if aggregation == "count" else -Decimal(str(e.value))
                void = Usage("void:" + e.id, value, float(e.timestamp), dimension=_dimension(e))
                account.bill(where, e.meter, void)
        live.unbilled, live.unbilled_voids = [], []

    def _taken_off(self, live: Live, e: Event) -> None:
        """Usage of a window whose price was taken off (a meter change, an item deleted),
        drained after that: Stripe bills it on no invoice. meter's contract
        (docs/billing.md, "Late usage"): in classic mode the window stays open until its
        cycle's invoice is final, so its delta usage is sent and held by Stripe (billed by
        nothing); otherwise it is recorded `late`, not sent."""
        own = live.period_of(e.timestamp)
        classic = live.scenario.billing_mode == "classic"
        if classic and own not in live.finalized_at and meter_spec(e.meter)[0] in DELTA:
            value = Decimal(1) if meter_spec(e.meter)[0] == "count" else Decimal(str(e.value))
            live.account.off_lines.append((e.meter, [Usage(e.id, value, float(e.timestamp))]))
        self.result.counts["usage of a price taken off, billed nowhere"] += 1

    def _where(self, live: Live, e: Event) -> int | None:
        if live.deleted_at is not None and float(e.timestamp) < live.deleted_at:
            return None  # the deleted customer's: its subscription was canceled uninvoiced
        if live.ended_at is not None and float(e.timestamp) >= live.ended_at:
            return None
        start, until = live.windows.get(e.meter, (-math.inf, math.inf))
        if not start <= float(e.timestamp) < until:
            return None  # no item bills its meter at its time: billed nowhere
        own = live.period_of(e.timestamp)
        if self.voided(live, own):
            return None  # its invoice was voided at the period's end: billed nowhere
        where = billed_in(meter_spec(e.meter)[0], own, own in live.finalized_at, self.open_of(live),
                          own_trial=live.account.trial(own))  # fmt: skip
        return None if where is None or live.ended(where) else where

    def open_of(self, live: Live) -> int:
        return max(self.open_period, live.open_floor)

    # ------------------------------------------------------------------ stages

    async def stage(self, k: int, stage: Stage) -> None:
        """Post the stage's events in two rounds, each drained (so buckets get new versions
        across drains); every other action goes through its handler (`self.handlers`) with the
        second round."""
        posts: list[tuple[Live, Event]] = []
        others: list[tuple[Live, Action]] = []
        after: list[tuple[Live, Action]] = []
        for live in self.live:
            for action in live.scenario.actions:
                if action.period != k or action.stage != stage:
                    continue
                if isinstance(action, Post):
                    posts += [(live, e) for e in action.events]
                elif action.after_drain:
                    after.append((live, action))
                else:
                    others.append((live, action))
        cut = self.rng.randint(0, len(posts))
        for last, part in ((False, posts[:cut]), (True, posts[cut:])):
            for live, e in part:
                known = (e.tenant, e.id) in self.statuses or e in live.unbilled
                if e.valid and not known:
                    live.unbilled.append(e)
            if part:
                await self.post([e for _, e in part])
            # The other actions go with the second round (they act on usage drained before).
            for live, action in others if last else ():
                await self.handlers[type(action)](live, action)
            if part or (last and others):
                await self.drain()
        for live, action in after:
            await self.handlers[type(action)](live, action)

    async def void(self, live: Live, action: Action) -> None:
        assert isinstance(action, Void)
        s = live.scenario
        event = self.events.get((s.tenant, action.event_id))
        if event is None or not self.is_in(event) or action.event_id in live.voided:
            return
        if action.event_id not in live.raw_logged:
            return  # not drained yet
        args = ["usage", "void", "--id", action.event_id, "--tenant", s.tenant]
        proc = Proc(f"void-{action.event_id}", args, self.env(), self.workdir)
        await proc.start()
        code = await proc.wait(60)
        if live.ended_at is not None and float(event.timestamp) >= live.ended_at:
            # Usage after the subscription ended is attributed to no item: a void of it may be
            # refused (retry once attributed) and bills nothing either way.
            if code == 0:
                live.voided.add(action.event_id)
            self.result.counts["voids after the subscription ended"] += 1
            return
        if live.raw_logged[action.event_id]:
            if code != 0:
                self.result.violations.append(
                    f"void of {action.event_id} (folded with the raw log on) failed: {proc.why()}"
                )
                return
            live.voided.add(action.event_id)
            live.unbilled_voids.append(event)
            self.result.counts["voids"] += 1
        else:
            self.result.counts["voids refused (raw log was off)"] += 1
            if code == 0:
                self.result.violations.append(
                    f"void of {action.event_id} (folded with METER_RAW_LOG=0) answered success"
                )

    async def reset(self, live: Live, action: Action) -> None:
        """Reset the billing-cycle anchor at the clock's time: the period ends now, a full one
        starts now (Stripe docs, billing/subscriptions/billing-cycle), so every later period of
        the scenario starts as much earlier."""
        assert isinstance(action, Reset)
        assert self.sdk is not None
        assert self.running is not None
        k = action.period
        now = self.running.emu.state.now_for_customer(live.cus)
        params: Any = {"billing_cycle_anchor": {"type": "now"}}
        await self.sdk.v1.subscriptions.update_async(live.subscription, params)
        live.bounds[k] = (live.bounds[k][0], now)
        live.bounds[k + 1 :] = [(now + j * DAY, now + (j + 1) * DAY)
                                for j in range(len(live.bounds) - k - 1)]  # fmt: skip
        live.open_floor = k + 1
        await self.settle()
        self.result.counts["anchor resets"] += 1

    async def cancel(self, live: Live, action: Action) -> None:
        """Cancel through meter's API. Now: the period ends at the clock's time and its final
        invoice bills the usage so far (`invoice_now`, meter's default; Stripe API reference,
        cancel a subscription). At period end: the period's invoice bills its usage and no
        renewal follows (Stripe docs, billing/subscriptions/cancel)."""
        assert isinstance(action, Cancel)
        assert self.http is not None
        assert self.running is not None
        s, k = live.scenario, action.period
        now = self.running.emu.state.now_for_customer(live.cus)
        url = f"http://127.0.0.1:{self.port}/v1/customers/{s.customer}/subscription/cancel"
        headers = {"Authorization": f"Bearer {self.keys[s.tenant]}"}
        body = {"immediately": True} if action.now else {}
        async with self.http.post(url, json=body, headers=headers) as response:
            if response.status != 200:
                self.result.violations.append(
                    f"#{s.index} cancel answered {response.status} {await response.text()}"
                )
                return
        if action.now:
            live.bounds[k] = (live.bounds[k][0], now)
        live.ended_at = live.bounds[k][1]
        live.last_period = k
        live.no_open_from = k if action.now else k + 1
        await self.settle()
        self.result.counts["cancels " + ("now" if action.now else "at period end")] += 1

    async def pause(self, live: Live, action: Action) -> None:
        """Pause payment collection; the invoices' amounts do not change."""
        assert isinstance(action, Pause)
        assert self.sdk is not None
        params: Any = {"pause_collection": {"behavior": action.behavior}}
        await self.sdk.v1.subscriptions.update_async(live.subscription, params)
        for j in range(action.period, self.frame.periods + 1):
            live.paused[j] = action.behavior
        await self.settle()
        self.result.counts[f"pauses ({action.behavior})"] += 1

    async def resume(self, live: Live, action: Action) -> None:
        """Resume payment collection: the invoices of this period on are collected."""
        assert isinstance(action, Resume)
        assert self.sdk is not None
        params: Any = {"pause_collection": ""}
        await self.sdk.v1.subscriptions.update_async(live.subscription, params)
        for j in range(action.period, self.frame.periods + 1):
            live.paused.pop(j, None)
        await self.settle()
        self.result.counts["pauses resumed"] += 1

    async def change_quantity(self, live: Live, action: Action) -> None:
        """Change the licensed item's quantity, prorated as of a time inside the period."""
        assert isinstance(action, Quantity)
        assert self.sdk is not None
        assert self.running is not None
        k = action.period
        now = self.running.emu.state.now_for_customer(live.cus)
        start, end = live.bounds[k]
        when = start + int(action.at * (now - start))
        sub = await self.sdk.v1.subscriptions.retrieve_async(live.subscription)
        (item,) = [i for i in sub["items"].data if live.meter_of_price.get(i.id) == SEATS]
        params: Any = {"items": [{"id": item.id, "quantity": action.quantity}],
                       "proration_behavior": action.behavior, "proration_date": when}  # fmt: skip
        await self.sdk.v1.subscriptions.update_async(live.subscription, params)
        live.account.change_seats(k, action.quantity, remaining=end - when, length=end - start,
                                  prorate=action.behavior == "create_prorations")  # fmt: skip
        await self.settle()
        self.result.counts[f"quantity changes ({action.behavior})"] += 1

    async def delete_customer(self, live: Live, action: Action) -> None:
        """Delete the Stripe customer: its subscription is canceled at once with no final
        invoice (Stripe API reference, delete a customer; `invoice_now` defaults to false), so
        the period's usage sent so far stays in Stripe billed by nothing, and later usage of it
        is billed nowhere (meter records it, docs/billing.md "Late usage")."""
        assert isinstance(action, DeleteCustomer)
        assert self.sdk is not None
        assert self.running is not None
        k = action.period
        now = self.running.emu.state.now_for_customer(live.cus)
        await self.sdk.v1.customers.delete_async(live.cus)
        live.former.append(live.cus)
        live.bounds[k] = (live.bounds[k][0], now)
        live.deleted_at = now
        live.uninvoiced.add(k)
        account = live.account
        for key in [key for key in account.billed if key[0] == k]:
            account.off_lines.append((key[1], account.billed.pop(key)))
        await self.settle()
        self.result.counts["customers deleted"] += 1

    async def come_back(self, live: Live, action: Action) -> None:
        """The customer comes back under the same id: a new Stripe customer (same metadata,
        same test clock) and a new subscription starting now; its periods start here."""
        assert isinstance(action, Return)
        assert self.running is not None
        k = action.period
        await self.subscribe(live)
        now = self.running.emu.state.now_for_customer(live.cus)  # the same clock
        live.bounds[k + 1 :] = [(now + j * DAY, now + (j + 1) * DAY)
                                for j in range(len(live.bounds) - k - 1)]  # fmt: skip
        live.open_floor = k + 1
        live.account.once_used = False  # the new subscription's coupon is a new one
        await self.settle()
        self.result.counts["customers back"] += 1

    async def meter_status(self, live: Live, action: Action) -> None:
        """Deactivate or reactivate the scenario's own Stripe meter. Usage drained while it is
        inactive is held by meter (billing.md, "Meters and aggregations"); on reactivation it is
        sent, so the model bills it as drained then (the next drain)."""
        assert isinstance(action, MeterStatus)
        assert self.sdk is not None
        meters = self.sdk.v1.billing.meters
        meter_id = self.meter_ids[action.meter]
        if action.active:
            await meters.reactivate_async(meter_id)
            live.inactive.discard(action.meter)
            live.unbilled = live.held + live.unbilled
            live.unbilled_voids = live.held_voids + live.unbilled_voids
            live.held, live.held_voids = [], []
        else:
            await meters.deactivate_async(meter_id)
            live.inactive.add(action.meter)
        await self.settle()
        self.result.counts["meters " + ("reactivated" if action.active else "deactivated")] += 1

    def voided(self, live: Live, k: int) -> bool:
        """Period `k`'s invoice is voided at its creation (its end): collection was paused
        with `void` then. Once it ended, no more of its usage is billed (billing.md)."""
        return live.paused.get(k) == "void" and self.open_of(live) > k

    async def finalize_kept_drafts(self, k: int) -> None:
        """The merchant finalizes period `k`'s invoice kept as a draft (`keep_as_draft`)
        at the CLOSED stage, as Stripe would have after its grace hour."""
        assert self.sdk is not None
        kept = [live for live in self.live if live.paused.get(k) == "keep_as_draft"]
        for live in kept:
            start, end = live.bounds[k]
            listed = await self.sdk.v1.invoices.list_async({"customer": live.cus, "limit": 100})
            for inv in listed.data:
                if inv.period_start == start and inv.period_end == end and inv.status == "draft":
                    if inv.auto_advance:
                        self.result.violations.append(
                            f"#{live.scenario.index} period {k}: a kept draft auto-advances"
                        )
                    await self.sdk.v1.invoices.finalize_invoice_async(inv.id)
                    self.result.counts["kept drafts finalized"] += 1
        if kept:
            await self.settle()

    async def change_price(self, live: Live, action: Action) -> None:
        """Replace the item's price on the same meter (Stripe's default proration behaviour)."""
        assert isinstance(action, PriceChange)
        assert self.sdk is not None
        sub = await self.sdk.v1.subscriptions.retrieve_async(live.subscription)
        (item,) = [i for i in sub["items"].data
                   if live.meter_of_price.get(i.price.id) == action.meter]  # fmt: skip
        new = await self.price(live, action.meter, action.price)
        live.meter_of_price[item.id] = action.meter  # names the invoice item's line in ours
        params: Any = {"items": [{"id": item.id, "price": new}]}
        await self.sdk.v1.subscriptions.update_async(live.subscription, params)
        flexible = live.scenario.billing_mode == "flexible"
        live.account.change_price(action.period, action.meter, action.price, flexible=flexible)
        await self.settle()
        self.result.counts[f"price changes ({live.scenario.billing_mode})"] += 1

    async def _item_on(self, live: Live, meter: str) -> Any:
        assert self.sdk is not None
        sub = await self.sdk.v1.subscriptions.retrieve_async(live.subscription)
        (item,) = [i for i in sub["items"].data
                   if live.meter_of_price.get(i.price.id) == meter]  # fmt: skip
        return item

    def _window(self, live: Live, meter: str, *, start: float | None = None,
                until: float | None = None) -> None:  # fmt: skip
        lo, hi = live.windows.get(meter, (-math.inf, math.inf))
        live.windows[meter] = (lo if start is None else start, hi if until is None else until)

    async def change_meter(self, live: Live, action: Action) -> None:
        """Replace the item's price by one on another meter (Stripe's default proration
        behaviour): the old meter is billed by nothing from now on, the new one from now."""
        assert isinstance(action, MeterChange)
        assert self.sdk is not None
        assert self.running is not None
        now = self.running.emu.state.now_for_customer(live.cus)
        item = await self._item_on(live, action.meter)
        new = await self.price(live, action.new, action.price)
        live.meter_of_price[item.id] = action.meter  # names the invoice item's line in ours
        params: Any = {"items": [{"id": item.id, "price": new}]}
        await self.sdk.v1.subscriptions.update_async(live.subscription, params)
        self._window(live, action.meter, until=now)
        self._window(live, action.new, start=now)
        live.taken_off[action.meter] = now
        flexible = live.scenario.billing_mode == "flexible"
        aggregation = meter_spec(action.new)[0]
        live.account.change_meter(action.period, action.meter, action.new, aggregation,
                                  action.price, flexible=flexible)  # fmt: skip
        await self.settle()
        self.result.counts[f"meter changes ({live.scenario.billing_mode})"] += 1

    async def add_item(self, live: Live, action: Action) -> None:
        """Add an item on a meter the subscription does not bill yet: it bills from now."""
        assert isinstance(action, AddItem)
        assert self.sdk is not None
        assert self.running is not None
        now = self.running.emu.state.now_for_customer(live.cus)
        new = await self.price(live, action.meter, action.price)
        params: Any = {"items": [{"price": new}]}
        await self.sdk.v1.subscriptions.update_async(live.subscription, params)
        if action.meter in live.account.items:  # a second item on a meter already billed
            live.account.add_twin(action.period, action.meter, action.price)
            self.result.counts["items added on a meter already billed"] += 1
        else:
            self._window(live, action.meter, start=now)
            live.account.add_item(action.period, action.meter, meter_spec(action.meter)[0],
                                  action.price)  # fmt: skip
            self.result.counts["items added"] += 1
        await self.settle()

    async def remove_item(self, live: Live, action: Action) -> None:
        """Delete the item on the meter (Stripe's default proration behaviour): its meter is
        billed by nothing from now on."""
        assert isinstance(action, RemoveItem)
        assert self.sdk is not None
        assert self.running is not None
        now = self.running.emu.state.now_for_customer(live.cus)
        item = await self._item_on(live, action.meter)
        live.meter_of_price[item.id] = action.meter  # names the invoice item's line in ours
        params: Any = {"items": [{"id": item.id, "deleted": True}]}
        await self.sdk.v1.subscriptions.update_async(live.subscription, params)
        self._window(live, action.meter, until=now)
        live.taken_off[action.meter] = now
        flexible = live.scenario.billing_mode == "flexible"
        live.account.remove_item(action.period, action.meter, flexible=flexible)
        await self.settle()
        self.result.counts[f"items removed ({live.scenario.billing_mode})"] += 1

    # ------------------------------------------------------------------ checks

    async def check_open(self, k: int) -> None:
        assert self.http is not None
        assert self.sdk is not None
        for live in self.live:
            s = live.scenario
            if live.no_open_from is not None and k >= live.no_open_from:
                self.result.counts["open-period checks skipped (canceled)"] += 1
                continue
            url = f"http://127.0.0.1:{self.port}/v1/customers/{s.customer}/usage"
            headers = {"Authorization": f"Bearer {self.keys[s.tenant]}"}
            async with self.http.get(url, headers=headers) as response:
                doc = await response.json()
            subs = [(live.account, live.subscription, f"#{s.index} period {k} open")]
            if live.second is not None:
                subs.append((live.second, live.second_sub, f"#{s.index} 2nd sub period {k} open"))
            open_k = max(k, live.open_floor)
            for account, sub_id, what in subs:
                expected = invariants.from_model(account.invoice(open_k, finalize=False))
                expected_ours = self._with_held(live, account, open_k, expected)
                part = _subscription_doc(doc, sub_id) if response.status == 200 else None
                if part is None or not part.get("invoice"):
                    self.result.violations.append(f"{what}: usage answered {response.status} {doc}")
                else:
                    ours = invariants.from_usage_doc(part, live.meter_of_price)
                    self.result.violations += invariants.bill_diff(
                        expected_ours, ours, f"{what} ours"
                    )
                params: Any = {"customer": live.cus, "subscription": sub_id}
                preview = await self.sdk.v1.invoices.create_preview_async(params)
                theirs = invariants.from_stripe_invoice(
                    preview.to_dict(recursive=True), live.meter_of_price
                )
                self.result.violations += invariants.bill_diff(expected, theirs, f"{what} preview")
                self.result.counts["open-period checks"] += 1

    def _with_held(
        self, live: Live, account: Account, open_k: int, expected: invariants.Bill
    ) -> invariants.Bill:
        """The open period's bill as ours counts it: with the usage held for an inactive Stripe
        meter (sent in its own period once the meter is reactivated in time); Stripe has none
        of it yet."""
        if not live.held and not live.held_voids:
            return expected
        account = copy.deepcopy(account)
        for e, sign in [(e, 1) for e in live.held] + [(e, -1) for e in live.held_voids]:
            if live.period_of(e.timestamp) == open_k and e.meter in account.items:
                one = Decimal(1) if meter_spec(e.meter)[0] == "count" else None
                value = sign * (one or Decimal(str(e.value)))
                key = (e.properties or {}).get(UNIQUE_PROPERTY, "") if sign > 0 else ""
                account.bill(open_k, e.meter, Usage(e.id, value, float(e.timestamp), key))
        return invariants.from_model(account.invoice(open_k, finalize=False))

    async def check_closed(self, k: int) -> None:
        assert self.sdk is not None
        await self.finalize_kept_drafts(k)
        for live in self.live:
            s = live.scenario
            if live.ended(k):
                continue
            if k in live.uninvoiced:
                self.result.counts["periods ended uninvoiced (customer deleted)"] += 1
                continue
            start, end = live.bounds[k]
            listed = await self.sdk.v1.invoices.list_async({"customer": live.cus, "limit": 100})
            subs = [(live.account, live.subscription, f"#{s.index} period {k} invoice")]
            if live.second is not None:
                subs.append((live.second, live.second_sub, f"#{s.index} 2nd sub period {k}"))
            for account, sub_id, what in subs:
                expected = invariants.from_model(account.invoice(k, finalize=True))
                found = [i for i in listed.data if i.period_start == start and i.period_end == end
                         and _subscription_of(i.to_dict(recursive=True)) == sub_id]  # fmt: skip
                if len(found) != 1 or found[0].status == "draft":
                    self.result.violations.append(
                        f"{what}: {len(found)} invoices, statuses {[i.status for i in found]}"
                    )
                    continue
                invoice = found[0].to_dict(recursive=True)
                transitions = invoice["status_transitions"]
                if sub_id != live.subscription:
                    self.result.counts["finalized invoices checked (2nd subscriptions)"] += 1
                elif live.paused.get(k) == "void":
                    if invoice["status"] != "void":
                        self.result.violations.append(f"{what}: {invoice['status']}, not void")
                    live.finalized_at[k] = transitions["voided_at"] or transitions["finalized_at"]
                    self.result.counts["voided invoices checked"] += 1
                    self.result.counts["finalized invoices checked"] += 1
                else:
                    live.finalized_at[k] = transitions["finalized_at"]
                    self.result.counts["finalized invoices checked"] += 1
                actual = invariants.from_stripe_invoice(invoice, live.meter_of_price)
                self.result.violations += invariants.bill_diff(expected, actual, what)

    async def check_end(self) -> None:
        assert self.control is not None
        events = await self.control.meter_events()
        ours = {cus: live for live in self.live for cus in [live.cus, *live.former]}
        mine = [e for e in events if e["customer"] in ours and not e.get("canceled")]
        finalized = {
            cus: {live.bounds[k]: at for k, at in live.finalized_at.items()}
            for live in self.live
            for cus in [live.cus, *live.former]
        }
        self.result.violations += invariants.sent_into_finalized(mine, finalized)
        stripe_totals: dict[tuple[str, str], Decimal] = {}
        for e in mine:
            if e["event_name"].split(OWN)[0] in METERS and meter_spec(e["event_name"])[0] in DELTA:
                key = (f"#{ours[e['customer']].scenario.index}", e["event_name"])
                stripe_totals[key] = stripe_totals.get(key, Decimal(0)) + Decimal(str(e["value"]))
        model_totals: dict[tuple[str, str], Decimal] = {}
        for live in self.live:
            for (_, meter), usage in live.account.billed.items():
                if meter_spec(meter)[0] in DELTA:
                    key = (f"#{live.scenario.index}", meter)
                    model_totals[key] = model_totals.get(key, Decimal(0)) + sum(
                        (u.value for u in usage), Decimal(0)
                    )
        for live in self.live:
            for meter, usage in live.account.off_lines:
                if meter_spec(meter)[0] in DELTA:
                    key = (f"#{live.scenario.index}", meter)
                    model_totals[key] = model_totals.get(key, Decimal(0)) + sum(
                        (u.value for u in usage), Decimal(0)
                    )
        self.result.violations += invariants.delta_totals(stripe_totals, model_totals)
        for (tenant, event_id), event in self.events.items():
            answers = self.statuses.get((tenant, event_id), set())
            if event.valid and not self.is_in(event):
                self.result.violations.append(f"valid event {event_id} answered {answers}")
            if not event.valid and answers != {"rejected"}:
                self.result.violations.append(
                    f"invalid event {event_id} ({event.reason}) answered {answers}"
                )
        conn = await asyncpg.connect(self.database_url)
        try:
            rows = await conn.fetch(queries.STUCK_OUTBOX)
        finally:
            await conn.close()
        log = "".join(p.read_text(errors="replace") for p in self.workdir.glob("report-*.log"))
        self.result.violations += invariants.stuck_rows([dict(r) for r in rows], log)

    # ------------------------------------------------------------------ the batch

    async def run(self) -> Result:
        started = time.monotonic()
        self.port = free_port()
        self.redis = await own_redis(self.workdir)
        config = webhook_emulator(
            self.port,
            self.secret,
            self.seed,
            webhook_retry_base=0.2,
            webhook_max_attempts=20,
            webhook_duplicate_probability=0.1 if self.options.chaos else 0.0,
            tick_seconds=3600.0,
        )
        try:
            async with (
                running_emulator(config) as running,
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            ):
                self.running, self.http = running, http
                self.sdk = running.client(timeout=30.0)
                self.control = EmulatorControl(http, running.api_base)
                self.serve = Proc("serve", ["serve", "--workers", "1", "--port", str(self.port)],
                                  self.env(), self.workdir)  # fmt: skip
                await self.serve.start()
                try:
                    await wait_port(self.port, 60)
                    await self.setup_catalog()
                    # `early` scenarios: usage arrives before billing knows the customer.
                    early = [x for x in self.live if "early" in x.scenario.features]
                    await self.setup_customers([x for x in self.live if x not in early])
                    await self.stage(0, Stage.EARLY)
                    await self.setup_customers(early)
                    await self._periods()
                    await self.check_end()
                finally:
                    await self.serve.stop()
        finally:
            await asyncio.to_thread(self.redis.stop)
        self.result.seconds = time.monotonic() - started
        return self.result

    async def _periods(self) -> None:
        frame = self.frame
        for k in range(frame.periods + 1):
            self.open_period = k
            await self.advance(k, -60)
            await self.stage(k, Stage.OPEN)
            await self.check_open(k)
            if k == frame.periods:
                break  # the last open stage only takes the last period's late usage
            self.open_period = k + 1
            await self.advance(k, HOUR // 2)
            await self.stage(k, Stage.GRACE)
            await self.advance(k, HOUR + 60)
            await self.check_closed(k)


def _mappings(s: Scenario) -> dict[str, dict[str, str]]:
    """The scenario's price mappings for the model: meter → value → the mapped meter."""
    out: dict[str, dict[str, str]] = {}
    for meter, value, name in s.mappings:
        out.setdefault(meter, {})[value] = name
    return out


def _dimension(e: Event) -> str:
    """The event's value of the dimension key as meter folds it (docs/dimensions.md,
    "Combinations"): a string as it is, `none` when the event lacks it."""
    value = (e.properties or {}).get(DIMENSION_KEY)
    return NONE if value is None else str(value)


def _subscription_of(invoice: dict[str, Any]) -> str | None:
    parent = invoice.get("parent") or {}
    return (parent.get("subscription_details") or {}).get("subscription")


def _subscription_doc(doc: dict[str, Any], sub_id: str) -> dict[str, Any] | None:
    """The part of our usage document about one subscription: the top level (the current one)
    or one of its `other_subscriptions`."""
    if doc.get("subscription") == sub_id:
        return doc
    return next((o for o in doc.get("other_subscriptions") or [] if o["subscription"] == sub_id),
                None)  # fmt: skip


# --------------------------------------------------------------------------- entry points


def frame_for(periods: int, now: float) -> Frame:
    """Clocks start `periods + 1` days (and two hours) ago, on the hour."""
    start = int(now) // HOUR * HOUR - (periods + 1) * DAY - 2 * HOUR
    return Frame(start, periods, now, late_window_s=(periods + 3) * DAY)


async def run_batch(batch: Batch) -> Result:
    """The batch's result; a batch that could not go on (a timeout, an error of its own) is a
    failed one, and the run goes on with the next."""
    try:
        return await batch.run()
    except Exception as exc:
        batch.result.violations.append(
            "batch aborted: " + "".join(traceback.format_exception(exc, limit=-4)).strip()
        )
        return batch.result


async def simulate(options: Options, database_url: str | None, workdir: Path) -> list[Result]:
    """Every batch of the run; `database_url`: a migrated database for a single batch (pytest),
    else each batch gets a fresh one next to the test server."""
    results = []
    done = 0
    batch_no = 0
    while done < options.scenarios:
        count = min(options.batch, options.scenarios - done)
        seed = options.seed + batch_no
        frame = frame_for(options.periods, time.time())
        scenarios = generate(seed, count, frame, kinds=options.kinds,
                             features=set(options.features), first_index=0)  # fmt: skip
        bdir = workdir / f"batch-{batch_no}"
        bdir.mkdir(parents=True, exist_ok=True)
        if database_url is not None:
            result = await run_batch(Batch(options, seed, scenarios, frame, database_url, bdir))
        else:
            server, pg = server_url(workdir)
            url, name = await fresh_database(server, "meter_sim")
            try:
                result = await run_batch(Batch(options, seed, scenarios, frame, url, bdir))
            finally:
                await drop_database(server, name)
                if pg is not None:
                    pg.stop()
        print(result.report(0 if options.all_violations else 60), flush=True)
        results.append(result)
        done += count
        batch_no += 1
    return results


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed", type=int, help="first batch's seed (default: random)")
    parser.add_argument("--scenarios", type=int, default=LONG.scenarios)
    parser.add_argument("--periods", type=int, default=LONG.periods, help="≥ 3")
    parser.add_argument("--batch", type=int, default=LONG.batch, help="scenarios per batch")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"comma list of {list(KINDS)} (default: all)"
    )
    parser.add_argument(
        "--features", help=f"comma list of {FEATURES + BATCH_FEATURES} (default: all)"
    )
    parser.add_argument("--short", action="store_true", help="the short profile (pytest's)")
    parser.add_argument("--no-chaos", action="store_true", help="no kills, faults or raw log off")
    parser.add_argument("--all", action="store_true", help="print every violation (else 60)")
    args = parser.parse_args(argv)
    features = (
        FEATURES + BATCH_FEATURES
        if args.features is None
        else tuple(f for f in args.features.split(",") if f and f != "none")
    )
    size = SHORT if args.short else Size(args.scenarios, args.periods, args.batch)
    return Options(
        seed=args.seed if args.seed is not None else random.randrange(2**31),
        kinds=tuple(args.kinds.split(",")),
        features=frozenset(features),
        chaos=not args.no_chaos,
        all_violations=args.all,
        scenarios=size.scenarios,
        periods=size.periods,
        batch=size.batch,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    if options.periods < 3:
        raise SystemExit("--periods must be at least 3")
    with tempfile.TemporaryDirectory(prefix="meter-sim-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        results = asyncio.run(simulate(options, None, workdir))
    clean = sum(len(r.scenarios) for r in results if r.ok)
    failed = [r for r in results if not r.ok]
    print(f"simulation: {clean} of {options.scenarios} scenarios clean"
          + "".join(f"\n  FAILED seed {r.seed}: {r.replay}" for r in failed))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
