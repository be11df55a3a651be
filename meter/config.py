"""Settings: one frozen object built once from the environment; nothing else reads os.environ."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from meter.errors import ConfigError
from meter.logs import FORMATS as LOG_FORMATS

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

MAX_LATE_WINDOW_S = 35 * 86400.0
# The Stripe API version meter is written against. The stripe SDK pins the version it speaks,
# and uv.lock pins the SDK; `check_stripe_api_version` refuses to start on any other.
STRIPE_API_VERSION = "2026-10-28.endive"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/meter"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def parse_duration(text: str) -> float:
    """Parse "48h", "35d", "90s", "1.5m" or plain seconds into seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 90s, 30m, 48h, 35d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def check_stripe_api_version(sdk_version: str) -> None:
    """Refuse to talk to Stripe with an SDK that speaks another API version than meter's."""
    if sdk_version != STRIPE_API_VERSION:
        raise ConfigError(
            f"the stripe SDK speaks API version {sdk_version}, but meter is written for "
            f"{STRIPE_API_VERSION}: install the stripe version from uv.lock"
        )


def _bool(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "yes", "on"}


def _durations(text: str | None, default: tuple[float, ...]) -> tuple[float, ...]:
    """A comma list of durations ("0,3d,6d"), sorted."""
    if text is None:
        return default
    return tuple(sorted(parse_duration(part) for part in text.split(",") if part.strip()))


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a meter process is configured with. Defaults suit a laptop."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    # Every Redis key starts with this; tests give each test its own prefix.
    redis_prefix: str = "meter"
    stripe_api_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str | None = None
    stripe_meter_events_base: str | None = None
    shards: int = 16
    late_window_s: float = 48 * 3600.0
    # How long after its acceptance a retry of an event is answered `duplicate` from Redis. Later
    # retries may be answered `accepted` but still count once: Postgres (usage_event_keys) keeps
    # every key at least as long as its event can be accepted (docs/api.md, Ingest).
    dedupe_window_s: float = 3600.0
    future_tolerance_s: float = 300.0
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "info"
    # "json" or "text"; None: text on a terminal, JSON anywhere else (`meter dev`: text).
    log_format: str | None = None
    strict: bool = False
    # Ingest limits.
    max_body_bytes: int = 1024 * 1024
    max_batch_events: int = 1000
    max_properties_bytes: int = 4096
    # Backpressure: a shard's stream longer than this refuses new events with 503.
    stream_high_water: int = 2_000_000
    # The group committer sends at most this many events in one Redis round trip.
    commit_max_events: int = 5000
    # Acknowledge events only once this many replicas have them (Redis WAIT after each commit
    # call; docs/operations.md, Durability). 0: as soon as the master applied them.
    redis_wait_replicas: int = 0
    # How long a commit waits for those replicas before the request gets a 503.
    redis_wait_timeout_s: float = 0.1
    api_key_cache_ttl_s: float = 30.0
    # Postgres lookups of API keys not known valid (new or unknown keys), per process: a token
    # bucket of `rate`/s with this burst; over it → 429 + Retry-After, no query. 0 disables it.
    api_key_lookup_rate: float = 100.0
    api_key_lookup_burst: int = 200
    # Billing routes that call Stripe (checkout, portal, setup intent, plan change, cancel,
    # resume), per tenant and process: one tenant cannot use up the shared Stripe account's rate
    # limit (100 operations/s live, 25 in a sandbox). 0 disables it.
    billing_rate_limit: float = 2.0
    billing_rate_burst: int = 10
    # Ingest rate limit per API key and process: a token bucket of `burst` requests refilled at
    # `rate` requests/s; over it → 429 + Retry-After. 0 disables it.
    ingest_rate_limit: float = 10_000.0
    ingest_rate_burst: int = 20_000
    # `meter serve` worker processes sharing the port (SO_REUSEPORT); one per core.
    workers: int = 1
    # prometheus-client multiprocess directory; set (by `serve --workers`) when workers > 1.
    metrics_dir: str | None = None
    # Aggregator: most stream entries per flush transaction (B). Only a backlog fills a batch;
    # bigger batches fold more events into each bucket write, so a backlog drains faster
    # (measured: docs/performance.md).
    aggregator_batch_size: int = 20_000
    # Aggregator: how often a worker renews, balances and takes over shard leases.
    aggregator_lease_interval_s: float = 1.0
    # Aggregator: pause between polls when every held stream is drained.
    aggregator_poll_interval_s: float = 0.2
    # Metrics servers (every process; never the API port): bind address, and the port of
    # `meter serve` and `meter dev` (0: no metrics server).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9102
    # Aggregator: /metrics port of `meter aggregate` (0: no metrics server).
    aggregator_metrics_port: int = 0
    # Raw event partitions (usage_events) older than this are dropped; rollups stay.
    raw_retention_s: float = 90 * 86400.0
    # Aggregator: write each event to the raw log (usage_events). Off (METER_RAW_LOG=0) skips
    # that write; exactly-once is unchanged (dedupe goes through usage_event_keys either way), but
    # re-attribution has no raw events to rebuild unattributed buckets from, and retention, which
    # drops ids with their raw partition, never prunes usage_event_keys.
    raw_log: bool = True
    # Aggregator: shards a worker flushes at once, each on its own Postgres connection, so that
    # one flush's Python work overlaps another's time in Postgres.
    aggregator_lanes: int = 2
    # Aggregator: the cardinality guard, combinations of dimension values per customer, meter
    # and billing period; usage of any further combination is folded into `_other`
    # (docs/dimensions.md).
    dimension_combinations: int = 1000
    # Billing (meter/billing/): tenant of Stripe customers whose metadata names none.
    billing_default_tenant: str = "default"
    # Billing: a past_due subscription keeps access this long after its first failed payment.
    billing_grace_period_s: float = 7 * 86400.0
    # Billing: dunning reminders, as offsets after the first failed payment.
    billing_dunning_schedule: tuple[float, ...] = (0.0, 3 * 86400.0, 6 * 86400.0)
    # Billing: how often `meter serve` runs dunning steps and refreshes billing gauges (0: never).
    billing_job_interval_s: float = 60.0
    # Billing: dunning notifications are POSTed here as JSON (unset: they are only logged).
    billing_notify_url: str | None = None
    # Signs each dunning notice like meter's webhooks (Meter-Signature); needed with the URL.
    billing_notify_secret: str | None = None
    # Billing: Stripe request timeout and network retries (retries reuse the idempotency key).
    billing_stripe_timeout_s: float = 20.0
    billing_stripe_retries: int = 2
    # Reporter (reporter/): "v2" (meter event stream) or "v1" (billing/meter_events, fallback).
    reporter_transport: str = "v2"
    # Reporter: meter events/s (token bucket); 0 = 90% of Stripe's limit for the transport
    # (9,000/s on v2, 900/s on v1). Burst: events allowed at once (0 = one batch).
    reporter_rate_limit: float = 0.0
    reporter_rate_burst: int = 0
    # Reporter: events per request (≤ 100), concurrent senders per process, request timeout.
    reporter_batch_size: int = 100
    reporter_concurrency: int = 4
    reporter_timeout_s: float = 10.0
    # Reporter: backoff on 429/5xx/timeouts (full jitter, base·2^n capped), tries per claim.
    reporter_backoff_base_s: float = 0.5
    reporter_backoff_cap_s: float = 30.0
    reporter_max_attempts: int = 6
    # Reporter: renew the v2 session this long before its 15-minute expiry.
    reporter_session_renew_s: float = 60.0
    # Reporter: outbox rows older than this are checked against event_summaries before a resend
    # (Stripe dedupes identifiers for at least 24 h).
    reporter_dedupe_horizon_s: float = 20 * 3600.0
    # Reporter: a period counts as invoiced this long after it ended, unless its invoice was
    # final earlier. Stripe finalizes 1 h after the end by default; 15 minutes are left for
    # sending (one claim's retries take ~4 min at most with the defaults, see reporter/send.py).
    reporter_invoice_grace_s: float = 45 * 60.0
    # Reporter: pause between polls when the outbox is empty; reconciliation interval (0: off).
    reporter_poll_interval_s: float = 1.0
    reporter_reconcile_interval_s: float = 3600.0
    # Reporter: /metrics port of `meter report` (0: no metrics server).
    reporter_metrics_port: int = 0
    # Notifier (notifier/, docs/webhooks.md): deliveries claimed per round, sent at once, and
    # the time one attempt may take (connect to last byte).
    notifier_batch_size: int = 50
    notifier_concurrency: int = 8
    notifier_timeout_s: float = 10.0
    # Notifier: retries of a failed delivery wait uniformly in [0, min(cap, base·2^n)] (full
    # jitter) and stop this long after the delivery was created (or redelivered): then failed.
    notifier_backoff_base_s: float = 30.0
    notifier_backoff_cap_s: float = 3 * 3600.0
    notifier_retry_for_s: float = 3 * 86400.0
    # Notifier: an endpoint whose every attempt has failed for this long (at least
    # notifier_disable_min_failures of them) is disabled.
    notifier_disable_after_s: float = 3 * 86400.0
    notifier_disable_min_failures: int = 5
    # Notifier: pause between polls when nothing is due; /metrics port of `meter notify`.
    notifier_poll_interval_s: float = 1.0
    notifier_metrics_port: int = 0
    # Notifier: deliver to loopback, private and other non-global addresses too (off: a tenant's
    # URL must not reach internal services; `meter dev` turns it on for local receivers).
    notifier_private_urls: bool = False
    # Notifier: finished deliveries (their attempts) and events whose deliveries are all gone are
    # deleted this long after they were made (0: kept for ever); pending ones never are.
    notifier_retention_s: float = 30 * 86400.0
    # Evaluator (alerts): the full sweep's interval, the bound on how late a lost touch makes an
    # alert (docs/alerts.md); /metrics port of `meter evaluate` (0: no metrics server).
    evaluator_sweep_interval_s: float = 60.0
    evaluator_metrics_port: int = 0

    def __post_init__(self) -> None:
        for name, port in (
            ("METER_METRICS_PORT", self.metrics_port),
            ("METER_AGGREGATOR_METRICS_PORT", self.aggregator_metrics_port),
            ("METER_REPORTER_METRICS_PORT", self.reporter_metrics_port),
            ("METER_NOTIFIER_METRICS_PORT", self.notifier_metrics_port),
            ("METER_EVALUATOR_METRICS_PORT", self.evaluator_metrics_port),
        ):
            if not 0 <= port <= 65535:
                raise ConfigError(f"{name} must be between 0 and 65535 (0: no metrics server)")
        if not 1 <= self.workers <= 256:
            raise ConfigError("METER_WORKERS must be between 1 and 256")
        if not 1 <= self.shards <= 1024:
            raise ConfigError("METER_SHARDS must be between 1 and 1024")
        if not 0 < self.late_window_s <= MAX_LATE_WINDOW_S:
            raise ConfigError("METER_LATE_WINDOW must be > 0 and at most 35d")
        # Longer would only keep Redis keys after their event is refused as too_late anyway.
        if not 0 < self.dedupe_window_s <= self.late_window_s + 3600.0:
            raise ConfigError("METER_DEDUPE_WINDOW must be > 0 and at most METER_LATE_WINDOW + 1h")
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise ConfigError("METER_LOG_LEVEL must be debug, info, warning or error")
        if self.log_format is not None and self.log_format not in LOG_FORMATS:
            raise ConfigError("METER_LOG_FORMAT must be json or text")
        if not 1 <= self.aggregator_batch_size <= 100_000:
            raise ConfigError("METER_AGGREGATOR_BATCH_SIZE must be between 1 and 100000")
        if not self.ingest_rate_limit >= 0:  # also refuses NaN
            raise ConfigError("METER_INGEST_RATE_LIMIT must be >= 0 (0 disables it)")
        if self.ingest_rate_burst < 1:
            raise ConfigError("METER_INGEST_RATE_BURST must be at least 1")
        if not 0 <= self.redis_wait_replicas <= 16:
            raise ConfigError("METER_REDIS_WAIT_REPLICAS must be between 0 and 16")
        # Under the Redis clients' 5 s socket timeout, with room for the script itself.
        if not 0.001 <= self.redis_wait_timeout_s <= 2:
            raise ConfigError("METER_REDIS_WAIT_TIMEOUT must be between 1ms and 2s")
        if not self.api_key_lookup_rate >= 0 or not self.billing_rate_limit >= 0:
            raise ConfigError(
                "METER_API_KEY_LOOKUP_RATE and METER_BILLING_RATE_LIMIT must be >= 0 (0 disables)"
            )
        if self.api_key_lookup_burst < 1 or self.billing_rate_burst < 1:
            raise ConfigError(
                "METER_API_KEY_LOOKUP_BURST and METER_BILLING_RATE_BURST must be at least 1"
            )
        if self.api_key_cache_ttl_s < 0:
            raise ConfigError("METER_API_KEY_CACHE_TTL must be >= 0")
        if self.dimension_combinations < 1:
            raise ConfigError("METER_DIMENSION_COMBINATIONS must be at least 1")
        if not 1 <= self.aggregator_lanes <= 64:
            raise ConfigError("METER_AGGREGATOR_LANES must be between 1 and 64")
        if self.reporter_transport not in ("v1", "v2"):
            raise ConfigError("METER_REPORTER_TRANSPORT must be v1 or v2")
        if not 1 <= self.reporter_batch_size <= 100:
            raise ConfigError("METER_REPORTER_BATCH_SIZE must be between 1 and 100")
        if not 1 <= self.reporter_concurrency <= 64:
            raise ConfigError("METER_REPORTER_CONCURRENCY must be between 1 and 64")
        if not self.reporter_rate_limit >= 0:
            raise ConfigError("METER_REPORTER_RATE_LIMIT must be >= 0 (0: the default)")
        if self.reporter_max_attempts < 1:
            raise ConfigError("METER_REPORTER_MAX_ATTEMPTS must be at least 1")
        if self.reporter_dedupe_horizon_s >= 24 * 3600.0:
            raise ConfigError("METER_REPORTER_DEDUPE_HORIZON must stay under Stripe's 24h")
        # Past 35 days Stripe takes no timestamp inside the period anyway. Above Stripe's
        # longest finalization grace (72h) only the invoice webhooks close a period in time:
        # allowed (tests on test clocks in the past need it), and the reporter warns.
        if not 0 <= self.reporter_invoice_grace_s <= 35 * 86400.0:
            raise ConfigError(
                "METER_REPORTER_INVOICE_GRACE must be between 0 and 35d (Stripe's meter event"
                " timestamp window)"
            )
        if not 1 <= self.notifier_batch_size <= 1000:
            raise ConfigError("METER_NOTIFIER_BATCH_SIZE must be between 1 and 1000")
        if not 1 <= self.notifier_concurrency <= 256:
            raise ConfigError("METER_NOTIFIER_CONCURRENCY must be between 1 and 256")
        if not 0 < self.notifier_timeout_s <= 60:
            raise ConfigError("METER_NOTIFIER_TIMEOUT must be > 0 and at most 60s")
        if not 0 < self.notifier_backoff_base_s <= self.notifier_backoff_cap_s:
            raise ConfigError(
                "METER_NOTIFIER_BACKOFF_BASE must be > 0 and at most METER_NOTIFIER_BACKOFF_CAP"
            )
        if self.notifier_retry_for_s < 0 or self.notifier_disable_after_s < 0:
            raise ConfigError("METER_NOTIFIER_RETRY_FOR and METER_NOTIFIER_DISABLE_AFTER: >= 0")
        if self.billing_notify_url and len(self.billing_notify_secret or "") < 16:
            raise ConfigError(
                "METER_BILLING_NOTIFY_URL needs METER_BILLING_NOTIFY_SECRET (16 characters or "
                "more): dunning notices are signed like meter's webhooks, so that the receiver "
                "can tell them from anyone's POST (docs/webhooks.md)"
            )
        if self.notifier_disable_min_failures < 1:
            raise ConfigError("METER_NOTIFIER_DISABLE_MIN_FAILURES must be at least 1")
        if self.notifier_retention_s and self.notifier_retention_s < self.notifier_retry_for_s:
            raise ConfigError(
                "METER_NOTIFIER_RETENTION must be 0 (keep for ever) or at least "
                "METER_NOTIFIER_RETRY_FOR: a delivery's log outlives its retries"
            )
        if not 1.0 <= self.evaluator_sweep_interval_s <= 86400.0:
            raise ConfigError("METER_EVALUATOR_SWEEP_INTERVAL must be between 1s and 1d")
        # Dropping raw events still inside the late window would drop their dedupe ids too.
        if self.raw_retention_s < self.late_window_s + 86400.0:
            raise ConfigError("METER_RAW_RETENTION must exceed METER_LATE_WINDOW by at least 1d")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from METER_* / STRIPE_* variables (see docs/configuration.md)."""
        e = os.environ if env is None else env
        base = cls()

        def get(name: str) -> str | None:
            value = e.get(name)
            return value if value not in (None, "") else None

        def integer(name: str, default: int) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                return int(raw)
            except ValueError:
                raise ConfigError(f"{name} must be an integer, got {raw!r}") from None

        def number(name: str, default: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                return float(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from None

        def duration(name: str, default: float) -> float:
            raw = get(name)
            return default if raw is None else parse_duration(raw)

        return cls(
            database_url=get("METER_DATABASE_URL") or base.database_url,
            redis_url=get("METER_REDIS_URL") or base.redis_url,
            redis_prefix=get("METER_REDIS_PREFIX") or base.redis_prefix,
            stripe_api_key=get("STRIPE_API_KEY"),
            stripe_webhook_secret=get("STRIPE_WEBHOOK_SECRET"),
            stripe_api_base=get("STRIPE_API_BASE"),
            stripe_meter_events_base=get("STRIPE_METER_EVENTS_BASE"),
            shards=integer("METER_SHARDS", base.shards),
            late_window_s=duration("METER_LATE_WINDOW", base.late_window_s),
            dedupe_window_s=duration("METER_DEDUPE_WINDOW", base.dedupe_window_s),
            host=get("METER_HOST") or base.host,
            port=integer("METER_PORT", base.port),
            log_level=(get("METER_LOG_LEVEL") or base.log_level).lower(),
            log_format=(get("METER_LOG_FORMAT") or "").lower() or None,
            strict=_bool(get("METER_STRICT") or "0"),
            stream_high_water=integer("METER_STREAM_HIGH_WATER", base.stream_high_water),
            commit_max_events=integer("METER_COMMIT_MAX_EVENTS", base.commit_max_events),
            redis_wait_replicas=integer("METER_REDIS_WAIT_REPLICAS", base.redis_wait_replicas),
            redis_wait_timeout_s=duration("METER_REDIS_WAIT_TIMEOUT", base.redis_wait_timeout_s),
            api_key_cache_ttl_s=duration("METER_API_KEY_CACHE_TTL", base.api_key_cache_ttl_s),
            api_key_lookup_rate=number("METER_API_KEY_LOOKUP_RATE", base.api_key_lookup_rate),
            api_key_lookup_burst=integer("METER_API_KEY_LOOKUP_BURST", base.api_key_lookup_burst),
            billing_rate_limit=number("METER_BILLING_RATE_LIMIT", base.billing_rate_limit),
            billing_rate_burst=integer("METER_BILLING_RATE_BURST", base.billing_rate_burst),
            ingest_rate_limit=number("METER_INGEST_RATE_LIMIT", base.ingest_rate_limit),
            ingest_rate_burst=integer("METER_INGEST_RATE_BURST", base.ingest_rate_burst),
            workers=integer("METER_WORKERS", base.workers),
            metrics_dir=get("PROMETHEUS_MULTIPROC_DIR"),
            aggregator_batch_size=integer(
                "METER_AGGREGATOR_BATCH_SIZE", base.aggregator_batch_size
            ),
            aggregator_lease_interval_s=duration(
                "METER_AGGREGATOR_LEASE_INTERVAL", base.aggregator_lease_interval_s
            ),
            aggregator_poll_interval_s=duration(
                "METER_AGGREGATOR_POLL_INTERVAL", base.aggregator_poll_interval_s
            ),
            metrics_host=get("METER_METRICS_HOST") or base.metrics_host,
            metrics_port=integer("METER_METRICS_PORT", base.metrics_port),
            aggregator_metrics_port=integer(
                "METER_AGGREGATOR_METRICS_PORT", base.aggregator_metrics_port
            ),
            raw_retention_s=duration("METER_RAW_RETENTION", base.raw_retention_s),
            raw_log=_bool(get("METER_RAW_LOG") or "1"),
            aggregator_lanes=integer("METER_AGGREGATOR_LANES", base.aggregator_lanes),
            dimension_combinations=integer(
                "METER_DIMENSION_COMBINATIONS", base.dimension_combinations
            ),
            billing_default_tenant=get("METER_BILLING_TENANT") or base.billing_default_tenant,
            billing_grace_period_s=duration(
                "METER_BILLING_GRACE_PERIOD", base.billing_grace_period_s
            ),
            billing_dunning_schedule=_durations(
                get("METER_BILLING_DUNNING_SCHEDULE"), base.billing_dunning_schedule
            ),
            billing_job_interval_s=duration(
                "METER_BILLING_JOB_INTERVAL", base.billing_job_interval_s
            ),
            billing_notify_url=get("METER_BILLING_NOTIFY_URL"),
            billing_notify_secret=get("METER_BILLING_NOTIFY_SECRET"),
            billing_stripe_timeout_s=duration(
                "METER_BILLING_STRIPE_TIMEOUT", base.billing_stripe_timeout_s
            ),
            billing_stripe_retries=integer(
                "METER_BILLING_STRIPE_RETRIES", base.billing_stripe_retries
            ),
            reporter_transport=(get("METER_REPORTER_TRANSPORT") or base.reporter_transport).lower(),
            reporter_rate_limit=number("METER_REPORTER_RATE_LIMIT", base.reporter_rate_limit),
            reporter_rate_burst=integer("METER_REPORTER_RATE_BURST", base.reporter_rate_burst),
            reporter_batch_size=integer("METER_REPORTER_BATCH_SIZE", base.reporter_batch_size),
            reporter_concurrency=integer("METER_REPORTER_CONCURRENCY", base.reporter_concurrency),
            reporter_timeout_s=duration("METER_REPORTER_TIMEOUT", base.reporter_timeout_s),
            reporter_backoff_base_s=duration(
                "METER_REPORTER_BACKOFF_BASE", base.reporter_backoff_base_s
            ),
            reporter_backoff_cap_s=duration(
                "METER_REPORTER_BACKOFF_CAP", base.reporter_backoff_cap_s
            ),
            reporter_max_attempts=integer(
                "METER_REPORTER_MAX_ATTEMPTS", base.reporter_max_attempts
            ),
            reporter_session_renew_s=duration(
                "METER_REPORTER_SESSION_RENEW", base.reporter_session_renew_s
            ),
            reporter_dedupe_horizon_s=duration(
                "METER_REPORTER_DEDUPE_HORIZON", base.reporter_dedupe_horizon_s
            ),
            reporter_invoice_grace_s=duration(
                "METER_REPORTER_INVOICE_GRACE", base.reporter_invoice_grace_s
            ),
            reporter_poll_interval_s=duration(
                "METER_REPORTER_POLL_INTERVAL", base.reporter_poll_interval_s
            ),
            reporter_reconcile_interval_s=duration(
                "METER_REPORTER_RECONCILE_INTERVAL", base.reporter_reconcile_interval_s
            ),
            reporter_metrics_port=integer(
                "METER_REPORTER_METRICS_PORT", base.reporter_metrics_port
            ),
            notifier_batch_size=integer("METER_NOTIFIER_BATCH_SIZE", base.notifier_batch_size),
            notifier_concurrency=integer("METER_NOTIFIER_CONCURRENCY", base.notifier_concurrency),
            notifier_timeout_s=duration("METER_NOTIFIER_TIMEOUT", base.notifier_timeout_s),
            notifier_backoff_base_s=duration(
                "METER_NOTIFIER_BACKOFF_BASE", base.notifier_backoff_base_s
            ),
            notifier_backoff_cap_s=duration(
                "METER_NOTIFIER_BACKOFF_CAP", base.notifier_backoff_cap_s
            ),
            notifier_retry_for_s=duration("METER_NOTIFIER_RETRY_FOR", base.notifier_retry_for_s),
            notifier_disable_after_s=duration(
                "METER_NOTIFIER_DISABLE_AFTER", base.notifier_disable_after_s
            ),
            notifier_disable_min_failures=integer(
                "METER_NOTIFIER_DISABLE_MIN_FAILURES", base.notifier_disable_min_failures
            ),
            notifier_poll_interval_s=duration(
                "METER_NOTIFIER_POLL_INTERVAL", base.notifier_poll_interval_s
            ),
            notifier_metrics_port=integer(
                "METER_NOTIFIER_METRICS_PORT", base.notifier_metrics_port
            ),
            notifier_private_urls=_bool(get("METER_NOTIFIER_PRIVATE_URLS") or "0"),
            notifier_retention_s=duration("METER_NOTIFIER_RETENTION", base.notifier_retention_s),
            evaluator_sweep_interval_s=duration(
                "METER_EVALUATOR_SWEEP_INTERVAL", base.evaluator_sweep_interval_s
            ),
            evaluator_metrics_port=integer(
                "METER_EVALUATOR_METRICS_PORT", base.evaluator_metrics_port
            ),
        )

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests and `meter dev` use this)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
