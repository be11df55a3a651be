"""`meter dev`: the whole pipeline on a laptop, with nothing installed but this project.

One process runs: embedded Postgres and Redis (unless METER_DATABASE_URL / METER_REDIS_URL are
set; data kept in .meter/dev so usage survives restarts), the Stripe emulator (unless
STRIPE_API_KEY is set; its state kept in .meter/dev/stripe.json, its webhooks signed and sent to
this API, and its thin events — meter error reports — through an event destination made at each
start), migrations, the API, the aggregator, the reporter, the alert evaluator and the notifier
(outgoing webhooks). It seeds the emulator from a catalogue file (deploy/catalogue.example.yaml,
packaged into the wheel, unless --catalogue names another), on first start with a demo customer
subscribed to its first metered price, and always creates a fresh API key, then prints URLs and
ready-to-paste curls (the usage one on that price's meter). Logs are text lines (unless
METER_LOG_FORMAT=json), libraries' only from WARNING up, and while events move a one-line pipeline
summary follows every few seconds. Ctrl-C stops everything.

Every process serves its metrics on a port of its own, as in production (METER_METRICS_PORT for
the API, METER_AGGREGATOR_METRICS_PORT / METER_REPORTER_METRICS_PORT /
METER_NOTIFIER_METRICS_PORT / METER_EVALUATOR_METRICS_PORT, 9100, 9101, 9103 and 9104 here unless
set), and every port is checked before anything starts. While it runs, `.meter/dev/env` tells
`meter` commands in other terminals where everything is (meter/devenv.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry

from meter import appkeys, auth, devenv, logs, queries, wiring
from meter.config import Settings
from meter.embedded import EmbeddedPostgres, EmbeddedRedis
from meter.errors import ConfigError
from meter.migrate import migrate
from meter.signals import stop_on_signals

if TYPE_CHECKING:
    import stripe

    from meter.billing.catalogue import Catalogue, PriceSpec

log = logging.getLogger(__name__)

DEV_DIR = devenv.DEV_DIR
# The aggregator's and reporter's metrics ports in dev when their variables are unset (in
# production they are off unless set): those of compose.yaml and deploy/prometheus.yml.
DEV_AGGREGATOR_METRICS_PORT = 9100
DEV_REPORTER_METRICS_PORT = 9101
DEV_NOTIFIER_METRICS_PORT = 9103
DEV_EVALUATOR_METRICS_PORT = 9104
# The pipeline summary: at most one line this often, and only when it changed.
SUMMARY_INTERVAL_S = 5.0
_DEV_DB = "meter"
DEMO_TENANT = "demo"
DEMO_CUSTOMER = "demo-customer"
CATALOGUE_NAME = "catalogue.example.yaml"


CHECKOUT = Path(__file__).resolve().parents[1]


def default_catalogue(checkout: Path = CHECKOUT) -> Path:
    """The catalogue the emulator is seeded with unless `meter dev --catalogue` names another:
    deploy/'s in a checkout, else the copy packaged into the wheel (pyproject's force-include)."""
    found = checkout / "deploy" / CATALOGUE_NAME
    if found.is_file():
        return found
    return Path(str(resources.files("meter") / "_data" / CATALOGUE_NAME))


@dataclass(frozen=True, slots=True)
class DevPorts:
    """Every port `meter dev` listens on (0: that metrics server is off); the emulator's and
    the embedded servers' are chosen free by the system."""

    host: str
    api: int
    metrics_host: str
    api_metrics: int
    aggregator_metrics: int
    reporter_metrics: int
    notifier_metrics: int
    evaluator_metrics: int

    @classmethod
    def plan(cls, settings: Settings, env: Mapping[str, str], port: int | None) -> DevPorts:
        def metrics_port(name: str, configured: int, dev_default: int) -> int:
            return configured if env.get(name) else dev_default

        return cls(
            host=settings.host,
            api=port or settings.port,
            metrics_host=settings.metrics_host,
            api_metrics=settings.metrics_port,
            aggregator_metrics=metrics_port(
                "METER_AGGREGATOR_METRICS_PORT",
                settings.aggregator_metrics_port,
                DEV_AGGREGATOR_METRICS_PORT,
            ),
            reporter_metrics=metrics_port(
                "METER_REPORTER_METRICS_PORT",
                settings.reporter_metrics_port,
                DEV_REPORTER_METRICS_PORT,
            ),
            notifier_metrics=metrics_port(
                "METER_NOTIFIER_METRICS_PORT",
                settings.notifier_metrics_port,
                DEV_NOTIFIER_METRICS_PORT,
            ),
            evaluator_metrics=metrics_port(
                "METER_EVALUATOR_METRICS_PORT",
                settings.evaluator_metrics_port,
                DEV_EVALUATOR_METRICS_PORT,
            ),
        )

    def binds(self) -> list[tuple[str, str, str, int]]:
        """(what, how to change it, host, port) of every listening socket, metrics off left out."""
        wanted = [
            ("the API", "make dev PORT=… or METER_PORT", self.host, self.api),
            ("the API's metrics", "METER_METRICS_PORT", self.metrics_host, self.api_metrics),
            (
                "the aggregator's metrics",
                "METER_AGGREGATOR_METRICS_PORT",
                self.metrics_host,
                self.aggregator_metrics,
            ),
            (
                "the reporter's metrics",
                "METER_REPORTER_METRICS_PORT",
                self.metrics_host,
                self.reporter_metrics,
            ),
            (
                "the notifier's metrics",
                "METER_NOTIFIER_METRICS_PORT",
                self.metrics_host,
                self.notifier_metrics,
            ),
            (
                "the evaluator's metrics",
                "METER_EVALUATOR_METRICS_PORT",
                self.metrics_host,
                self.evaluator_metrics,
            ),
        ]
        return [bind for bind in wanted if bind[3]]

    def metrics_urls(self) -> dict[str, str]:
        """process → its /metrics URL, for the processes whose metrics server is on."""
        ports = {
            "api": self.api_metrics,
            "aggregator": self.aggregator_metrics,
            "reporter": self.reporter_metrics,
            "notifier": self.notifier_metrics,
            "evaluator": self.evaluator_metrics,
        }
        host = self.metrics_host
        return {name: f"http://{host}:{port}/metrics" for name, port in ports.items() if port}


def check_ports(ports: DevPorts) -> None:
    """Refuse in one line, before anything starts, when a port is taken or given twice; bound
    with SO_REUSEADDR as the servers bind, so a socket in TIME_WAIT does not count as taken."""
    seen: dict[int, str] = {}
    for what, setting, host, port in ports.binds():
        if port in seen:
            raise ConfigError(f"port {port} is given to both {seen[port]} and {what} ({setting})")
        seen[port] = what
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                why = "is in use" if exc.errno == errno.EADDRINUSE else f"fails ({exc.strerror})"
                raise ConfigError(
                    f"port {port} on {host} for {what} {why}; stop what holds it or choose "
                    f"another ({setting})"
                ) from None


def dev_env(
    settings: Settings, ports: DevPorts, key: str, emulator_base: str | None
) -> dict[str, str]:
    """What `.meter/dev/env` says: the settings other commands share with this `meter dev`,
    then the URLs and key a person or script needs."""
    values = {
        "METER_DATABASE_URL": settings.database_url,
        "METER_REDIS_URL": settings.redis_url,
        "METER_REDIS_PREFIX": settings.redis_prefix,
    }
    if emulator_base is not None:
        values |= {
            "STRIPE_API_KEY": settings.stripe_api_key or "",
            "STRIPE_API_BASE": settings.stripe_api_base or "",
            "STRIPE_METER_EVENTS_BASE": settings.stripe_meter_events_base or "",
            "METER_DEV_EMULATOR_URL": emulator_base,
        }
    values |= {"METER_URL": f"http://{ports.host}:{ports.api}", "METER_API_KEY": key}
    values |= {
        f"METER_DEV_{name.upper()}_METRICS_URL": url for name, url in ports.metrics_urls().items()
    }
    return values


async def _prepare(database_url: str, *, create_db: bool) -> tuple[str, str]:
    """Create the dev database when needed, migrate, and make a key. Returns (db url, key)."""
    if create_db:
        conn = await asyncpg.connect(database_url)
        try:
            if not await conn.fetchval(queries.DATABASE_EXISTS, _DEV_DB):
                await conn.execute(f'CREATE DATABASE "{_DEV_DB}"')
        finally:
            await conn.close()
        database_url = database_url.rsplit("/", 1)[0] + f"/{_DEV_DB}"
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        key = await auth.create_key(conn, name="dev", tenant=DEMO_TENANT)
    finally:
        await conn.close()
    return database_url, key


def demo_price(catalogue: Catalogue) -> PriceSpec | None:
    """The price the demo customer subscribes to: the catalogue's first metered one, so the
    banner's usage is billed, else its first price."""
    prices = [price for _, price in catalogue.prices()]
    return next((p for p in prices if p.meter is not None), prices[0] if prices else None)


def demo_meter(catalogue: Catalogue) -> str | None:
    """The meter the banner's example event names: the demo price's, if it is metered."""
    price = demo_price(catalogue)
    return price.meter if price is not None else None


@contextlib.asynccontextmanager
async def _emulator_client(settings: Settings) -> AsyncIterator[stripe.StripeClient]:
    """A `stripe.StripeClient` on the emulator of `settings`, its HTTP session closed after."""
    import stripe

    from meter.stripe_client import stripe_client

    http = stripe.AIOHTTPClient()
    try:
        yield stripe_client(
            settings.stripe_api_key or "",
            api_base=settings.stripe_api_base,
            meter_events_base=settings.stripe_meter_events_base,
            http_client=http,
        )
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]


async def _seed_demo(settings: Settings, catalogue: Catalogue) -> None:
    """The catalogue in (emulated) Stripe, as `meter stripe setup` makes it (every start: an
    edited file is applied, an unchanged one changes nothing), and once a demo customer
    subscribed to its `demo_price`; billing learns it all through webhooks."""
    import dataclasses

    from meter.billing.stripe_setup import setup_stripe

    # No webhook endpoint: the emulator delivers to this API itself.
    catalogue = dataclasses.replace(catalogue, webhook_url=None)
    for change in (await setup_stripe(settings, catalogue)).changes:
        if change.action != "unchanged":
            log.info("stripe emulator: %s", change)
    async with _emulator_client(settings) as client:
        found = await client.v1.customers.search_async(
            {"query": f"metadata['meter_customer']:'{DEMO_CUSTOMER}'"}
        )
        price = demo_price(catalogue)
        if found.data or price is None:
            return
        first = await client.v1.prices.list_async({"lookup_keys": [price.lookup_key]})
        customer = await client.v1.customers.create_async(
            {
                "email": "demo@example.com",
                "metadata": {"meter_customer": DEMO_CUSTOMER, "meter_tenant": DEMO_TENANT},
            }
        )
        await client.v1.subscriptions.create_async(
            {"customer": customer.id, "items": [{"price": first.data[0].id}]}
        )


async def _thin_destination(settings: Settings, url: str) -> str:
    """meter's thin-event destination in the emulator, made anew at each start (the previous
    run's replaced): Stripe shows a destination's signing secret only when it creates it, and
    this run's API must know it to take the meter error reports. Returns the secret."""
    from meter.billing.stripe_setup import DESTINATION_URL, destination_params

    async with _emulator_client(settings) as client:
        destinations = client.v2.core.event_destinations
        for old in (await destinations.list_async({"include": [DESTINATION_URL]})).data:
            if old.webhook_endpoint is not None and old.webhook_endpoint.url == url:
                await destinations.delete_async(old.id)
        params: Any = destination_params(url)
        created = await destinations.create_async(params)
    assert created.webhook_endpoint is not None
    secret = created.webhook_endpoint.signing_secret
    assert secret is not None
    return secret


def _banner(
    base: str, key: str, emulator: str | None, metrics: Mapping[str, str], meter: str | None
) -> str:
    auth_header = f"-H 'Authorization: Bearer {key}'"
    if meter is None:
        post = "The catalogue has no metered price: add one to post usage the demo is billed for."
    else:
        post = f"""Post usage for the demo customer:

curl -s {base}/v1/events {auth_header} \\
  -d '{{"id": "'$(date +%s%N)'", "customer": "{DEMO_CUSTOMER}", "meter": "{meter}"}}'"""
    stripe_line = (
        f"\n  stripe   {emulator} (emulator; control API under /_emulator/)" if emulator else ""
    )
    metrics_lines = "\n           ".join(f"{url} ({name})" for name, url in metrics.items())
    return f"""
meter is running at {base}
  health   {base}/readyz
  metrics  {metrics_lines or "off (every METER_*METRICS_PORT is 0)"}
  openapi  {base}/openapi.json{stripe_line}
  env      {devenv.ENV_FILE} (`meter` commands in another terminal here use it)

API key for tenant {DEMO_TENANT!r} (created just now, shown once):
  {key}

{post}

Read its usage and projected invoice:

curl -s {base}/v1/customers/{DEMO_CUSTOMER}/usage {auth_header}
"""


def _sample_sum(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of a metric's samples (over every label value not fixed by `labels`)."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def _sample_max(registry: CollectorRegistry, name: str) -> float:
    values = [s.value for f in registry.collect() for s in f.samples if s.name == name]
    return max(values, default=0.0)


def pipeline_summary(
    api: CollectorRegistry, aggregator: CollectorRegistry, reporter: CollectorRegistry
) -> str:
    """One line on where the events are, from the processes' own metrics: taken in, folded
    into rollups, sent to Stripe (as meter events), and how far behind each stage is."""
    accepted = _sample_sum(api, "meter_events_total", status="accepted")
    aggregated = _sample_sum(aggregator, "meter_aggregator_events_total")
    reported = _sample_sum(reporter, "meter_reporter_events_sent_total")
    lag_s = _sample_max(aggregator, "meter_aggregator_lag_seconds")
    outbox = _sample_sum(reporter, "meter_reporter_outbox_depth")
    return (
        f"pipeline: {accepted:.0f} accepted → {aggregated:.0f} aggregated → {reported:.0f} meter "
        f"events sent to Stripe · aggregator lag {lag_s:.0f}s · outbox {outbox:.0f}"
    )


async def _summarize(
    stop: asyncio.Event,
    api: CollectorRegistry,
    aggregator: CollectorRegistry,
    reporter: CollectorRegistry,
) -> None:
    """Log the pipeline summary whenever it changes: an idle console keeps its banner."""
    last = pipeline_summary(CollectorRegistry(), CollectorRegistry(), CollectorRegistry())
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SUMMARY_INTERVAL_S)
        line = pipeline_summary(api, aggregator, reporter)
        if line != last:
            log.info(line)
            last = line


async def _pipeline(settings: Settings, key: str, ports: DevPorts, catalogue: Catalogue) -> None:
    from aggregator.worker import Worker
    from evaluator.worker import Evaluator
    from meter.app import create_app
    from meter.connections import redis_client
    from meter.metrics import metrics_server
    from meter.stripe_emulator.core import EmulatorConfig
    from meter.stripe_emulator.server import running_emulator
    from notifier.worker import Notifier
    from reporter.worker import Reporter

    stop = stop_on_signals()
    async with AsyncExitStack() as stack:
        emulator_base = None
        if not settings.stripe_api_key:
            secret = "whsec_dev_" + secrets.token_hex(16)
            webhook_url = f"http://{ports.host}:{ports.api}/stripe/webhook"
            emu = await stack.enter_async_context(
                running_emulator(
                    EmulatorConfig(
                        port=0,
                        meter_events_port=0,
                        webhook_url=webhook_url,
                        webhook_secret=secret,
                        state_file=DEV_DIR / "stripe.json",
                    )
                )
            )
            emulator_base = emu.api_base
            settings = settings.replace(
                stripe_api_key=emu.api_key,
                stripe_api_base=emu.api_base,
                stripe_meter_events_base=emu.meter_events_base,
            )
            # Snapshot events come signed with the emulator's secret, the meter error reports
            # (thin events) with their event destination's: the API takes both.
            thin_secret = await _thin_destination(settings, webhook_url)
            settings = settings.replace(stripe_webhook_secret=f"{secret},{thin_secret}")
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        try:
            await web.TCPSite(runner, ports.host, ports.api).start()
        except OSError as exc:  # taken since check_ports: still one line
            raise ConfigError(
                f"the API cannot listen on {ports.host}:{ports.api} ({exc.strerror}); choose "
                "another port (make dev PORT=… or METER_PORT)"
            ) from None

        redis = redis_client(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        aggregator = await stack.enter_async_context(
            Worker(settings, redis, attributor=wiring.attributor())
        )
        reporter = await stack.enter_async_context(
            Reporter(settings, directory=wiring.customer_directory())
        )
        notifier = await stack.enter_async_context(Notifier(settings))
        evaluator = await stack.enter_async_context(Evaluator(settings, redis=redis))
        # Each process's metrics on a port of its own, never the API's: as Prometheus scrapes
        # them in production (deploy/prometheus.yml), so dashboards and alerts read the same.
        for registry, metrics_port in (
            (app[appkeys.METRICS].registry, ports.api_metrics),
            (aggregator.metrics.registry, ports.aggregator_metrics),
            (reporter.metrics.registry, ports.reporter_metrics),
            (notifier.metrics.registry, ports.notifier_metrics),
            (evaluator.metrics.registry, ports.evaluator_metrics),
        ):
            stack.enter_context(metrics_server(settings.metrics_host, metrics_port, registry))
        tasks = [
            asyncio.create_task(aggregator.run(stop), name="aggregator"),
            asyncio.create_task(reporter.run(stop), name="reporter"),
            asyncio.create_task(notifier.run(stop), name="notifier"),
            asyncio.create_task(evaluator.run(stop), name="evaluator"),
            asyncio.create_task(
                _summarize(
                    stop,
                    app[appkeys.METRICS].registry,
                    aggregator.metrics.registry,
                    reporter.metrics.registry,
                ),
                name="summary",
            ),
        ]
        if emulator_base is not None:
            await _seed_demo(settings, catalogue)
        # Written once everything answers; removed first thing on the way out.
        devenv.write(dev_env(settings, ports, key, emulator_base))
        stack.callback(devenv.remove)
        base = f"http://{ports.host}:{ports.api}"
        banner = _banner(base, key, emulator_base, ports.metrics_urls(), demo_meter(catalogue))
        print(banner, flush=True)
        await stop.wait()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def run_dev(settings: Settings, *, port: int | None = None, catalogue: Path | None = None) -> int:
    """Start dependencies as needed, then run every process until Ctrl-C."""
    env = os.environ
    # A console a person reads: text lines, whatever stderr is, unless JSON is asked for.
    logs.setup(settings.log_level, settings.log_format or "text")
    ports = DevPorts.plan(settings, env, port)
    from meter.billing.catalogue import load

    # Read first: a mistake in the file stops here, before anything starts.
    catalogue_spec = load(catalogue or default_catalogue())
    with ExitStack() as stack:
        # One `meter dev` per directory; then every port, before anything starts.
        stack.enter_context(devenv.dev_lock(DEV_DIR))
        devenv.remove()  # a previous run's, killed before it could
        check_ports(ports)
        database_url = settings.database_url
        if not env.get("METER_DATABASE_URL"):
            pg = EmbeddedPostgres(DEV_DIR.resolve() / "pg")
            print("starting embedded PostgreSQL…", file=sys.stderr)
            database_url = pg.start()
            stack.callback(pg.stop)
        redis_url = settings.redis_url
        if not env.get("METER_REDIS_URL"):
            redis = EmbeddedRedis(DEV_DIR.resolve() / "redis", appendfsync="everysec")
            print("starting embedded Redis…", file=sys.stderr)
            redis_url = redis.start()
            stack.callback(redis.stop)
        database_url, key = asyncio.run(
            _prepare(database_url, create_db=not env.get("METER_DATABASE_URL"))
        )
        settings = settings.replace(
            database_url=database_url,
            redis_url=redis_url,
            billing_default_tenant=DEMO_TENANT,
            # The laptop sees its usage in Stripe within seconds, not at the hourly close.
            billing_job_interval_s=10.0,
            # Webhook receivers under development listen on this machine.
            notifier_private_urls=True,
        )
        asyncio.run(_pipeline(settings, key, ports, catalogue_spec))
    return 0
